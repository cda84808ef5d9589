"""Measuring each path's cells, cheapest first, until its time budget (or memory cap) is spent."""

from __future__ import annotations

import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .config import path_label
from .hardware import hardware, timed
from .inputs import item_texts, request_texts
from .models import build_encoder, build_llm


def measure_direct(p: dict, cfg: dict, device: str, items: list[str], log) -> tuple[dict, list]:
    from ctrlrec.llm.backends import fill
    from ctrlrec.llm.prompts import rating_chat

    t0 = time.perf_counter()
    be = build_llm(p, device)
    model = be.model
    head_w, embed_w = model.get_output_embeddings().weight, model.get_input_embeddings().weight
    head, embed = head_w.numel(), embed_w.numel()
    tied = head_w.data_ptr() == embed_w.data_ptr()
    total = sum(x.numel() for x in model.parameters())  # counts a tied matrix once
    reqs = request_texts(max(cfg["requests"]))
    templates: list = []

    def prompts_for(n_items, n_req):
        while len(templates) < n_req:
            templates.append(be.render(rating_chat(reqs[len(templates)])))
        return [fill(templates[r], items[j % len(items)]) for r in range(n_req)
                for j in range(n_items)]

    sample = prompts_for(min(64, len(items)), min(4, len(reqs)))
    info = {"label": path_label(p), **p, "load_seconds": round(time.perf_counter() - t0, 2),
            "params": total, "body_params": total - embed - (0 if tied else head),
            "head_params": head,
            "prefix_tokens": float(np.mean([len(be._ids(t.prefix)) for t in templates[:4]])),
            "suffix_tokens": float(np.mean([len(be._ids(x.suffix)) for x in sample])),
            "settings": be.settings}
    be.rate(sample[:min(8, p["batch_size"])])  # warm-up (kernels, allocator)
    rows, spent, rate = [], 0.0, None
    for n_req, n_items in sorted(((r, n) for n in cfg["items"] for r in cfg["requests"]),
                                 key=lambda c: (c[0] * c[1], c[0])):
        n = n_req * n_items
        if rate is not None and spent + n / rate > p["budget_s"]:
            log(f"  {info['label']}: stopping before {n_items} items × {n_req} requests "
                f"(≈{n / rate:.0f} s; budget {p['budget_s']} s, {spent:.0f} s spent)")
            break
        prompts = prompts_for(n_items, n_req)
        dt = timed(lambda: be.rate(prompts), device)
        spent += dt
        rate = n / dt
        rows.append({"path": info["label"], "method": "direct", "items": n_items,
                     "requests": n_req, "seconds": dt})
        log(f"  {info['label']}: {n_items} items × {n_req} requests: {dt:.2f} s "
            f"({rate:.1f} prompts/s)")
    return info, rows


def measure_distilled(p: dict, cfg: dict, device: str, log) -> tuple[dict, list]:
    import torch

    from ctrlrec.embeddings import embedding_dim
    from ctrlrec.retrieval import topk_dot

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        enc = build_encoder(p, device, Path(tmp))
    dim = embedding_dim(enc)
    dtype = getattr(torch, p["dtype"])
    nbytes = torch.finfo(dtype).bits // 8
    reqs = request_texts(max(cfg["requests"]))
    info = {"label": path_label(p), **p, "load_seconds": round(time.perf_counter() - t0, 2),
            "dim": dim, "bytes_per_value": nbytes,
            "params": sum(x.numel() for x in enc.parameters())}

    def encode(n):
        with torch.no_grad():
            return enc.encode(reqs[:n], batch_size=p["encode_batch"], convert_to_tensor=True,
                              normalize_embeddings=True, show_progress_bar=False)

    encode(min(8, len(reqs)))  # warm-up
    enc_s = {}
    for n_req in cfg["requests"]:
        dt = timed(lambda: encode(n_req), device)
        enc_s[n_req] = min(dt, timed(lambda: encode(n_req), device)) if dt < 1 else dt
        log(f"  {info['label']}: encode {n_req} requests: {enc_s[n_req] * 1e3:.1f} ms")
    every = encode(max(cfg["requests"])).to(dtype)  # the first n rows serve n requests
    rows, spent, limit = [], 0.0, p["max_item_matrix_gib"] * 2**30
    gen = torch.Generator(device=device).manual_seed(cfg["seed"])
    for n_items in cfg["items"]:
        if n_items * dim * nbytes > limit:
            info["memory_stop"] = (f"{n_items} items × {dim} × {nbytes} B = "
                                   f"{n_items * dim * nbytes / 2**30:.3g} GiB > "
                                   f"max_item_matrix_gib {p['max_item_matrix_gib']}")
            log(f"  {info['label']}: not measured from {info['memory_stop']}")
            break
        try:
            matrix = torch.randn(n_items, dim, generator=gen, device=device, dtype=dtype)
        except (RuntimeError, MemoryError) as exc:  # out of device memory
            info["memory_stop"] = f"{n_items} items: {str(exc).splitlines()[0][:120]}"
            break
        for n_req in cfg["requests"]:
            q, k, buf = every[:n_req], cfg["top_k"], p["score_buffer_mib"] * 2**20

            def score():
                topk_dot(q, matrix, k, buffer_bytes=buf)
            dt = timed(score, device)
            if dt < 1:  # short: take the best of a few repeats
                dt = min([dt] + [timed(score, device) for _ in range(2)])
            spent += dt
            rows.append({"path": info["label"], "method": "distilled", "items": n_items,
                         "requests": n_req, "encode_seconds": enc_s[n_req], "score_seconds": dt,
                         "seconds": enc_s[n_req] + dt})
            log(f"  {info['label']}: {n_items} items × {n_req} requests: score {dt * 1e3:.1f} ms")
            if spent > p["budget_s"]:
                info["budget_stop"] = f"{spent:.0f} s spent (budget {p['budget_s']} s)"
                break
        matrix = None  # free it before the next, larger one is made
        if "budget_stop" in info:
            break
    return info, rows


def measure(cfg: dict, log=print, source: str = "", checkpoint=None) -> dict:
    """Measure every path; `checkpoint(result)` after each, so a cut-off run keeps what it did."""
    import torch

    from bench.report.provenance import git_state  # stdlib only: fine on a bare GPU machine
    from ctrlrec.hardware import default_device, describe, resolve_dtype

    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    result = {"config": cfg, "suite_file": source, "paths": [], "rows": [],
              "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "git": git_state()}  # the code measured ("unknown" outside a checkout)
    # Each path as it is measured: its device chosen and `dtype: auto` resolved for that device.
    paths = []
    for p in cfg["paths"]:
        dev = p.get("device") or default_device()
        paths.append({**p, "device": dev, "dtype": resolve_dtype(p["dtype"], dev)})
    devices = {p["device"] for p in paths}
    device = devices.pop() if len(devices) == 1 else "mixed"
    hw_device = "cuda" if device == "cuda" else "cpu"
    result["hardware"] = hardware(hw_device, [p["dtype"] for p in paths], torch.get_num_threads())
    result["hardware"]["dtypes"] = [{"path": path_label(p), "dtype": asked["dtype"],
                                     "resolved": p["dtype"]}
                                    for asked, p in zip(cfg["paths"], paths)]
    result["hardware"]["describe"] = describe(hw_device)
    items = None
    for p in paths:
        dev = p["device"]
        log(f"measuring {path_label(p)} on {dev}")
        if p["method"] == "direct":
            items = items or item_texts(cfg["item_texts"])
            info, rows = measure_direct(p, cfg, dev, items, log)
        else:
            info, rows = measure_distilled(p, cfg, dev, log)
        result["paths"].append(info)
        result["rows"] += rows
        if dev == "cuda":
            info["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
            torch.cuda.empty_cache()
        if checkpoint:
            checkpoint(result)
    return result
