"""`bench throughput`: what one batch of feeds costs, for direct LLM scoring and for the distilled
two-tower path, over a grid of item counts × concurrent requests (the paper's Figure 5, extended).

Cells that fit each path's time budget are measured as the product runs them (the hf backend's
batched, prefix-reusing `rate`; the sentence-transformers encoder plus a chunked matrix product and
top-k over the item matrix). A cost model fitted to the measured cells fills in the rest; every
number says whether it was measured or extrapolated, and each fit reports its error.

Measuring needs only torch, transformers, sentence-transformers, numpy and yaml, so it also runs on
a bare GPU machine (`python -m bench.throughput SUITE --measure-only`); the tables, fits and plot
are made from the written measurements.json (`bench throughput --from FILE`)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import yaml

# Shapes of the paper's models (transformers config fields) for random-weight runs: throughput
# does not depend on the weights, so these stand in where the weights cannot be downloaded.
LLM_ARCHS = {
    "llama-3.1-8b": ("llama", dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                                   num_attention_heads=32, num_key_value_heads=8,
                                   rope_theta=500000.0, max_position_embeddings=8192)),
    "qwen2.5-1.5b": ("qwen2", dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                                   num_attention_heads=12, num_key_value_heads=2,
                                   max_position_embeddings=8192, tie_word_embeddings=True)),
    "tiny": ("qwen2", dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2,
                           max_position_embeddings=2048)),
}
# Stella-400M (stella_en_400M_v5) is a 24-layer, 1024-wide encoder: the BERT-large shape.
ENCODER_ARCHS = {
    "stella-400m-shape": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                              intermediate_size=4096, max_position_embeddings=512),
    "tiny": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=64, max_position_embeddings=128),
}
# Data-sheet figures (memory bandwidth B/s, dense bf16 FLOP/s) for the floors, by device name.
GPU_SPECS = {"H200": (4.8e12, 989e12), "H100 PCIe": (2.0e12, 756e12), "H100": (3.35e12, 989e12),
             "A100": (2.0e12, 312e12), "A6000": (0.768e12, 155e12)}

TOP_KEYS = {"name", "description", "seed", "items", "requests", "top_k", "threads", "item_texts",
            "paths"}
PATH_KEYS = {
    "direct": {"method", "backend", "model", "random_arch", "tokenizer", "dtype", "batch_size",
               "budget_s", "device"},
    "distilled": {"method", "model", "random_arch", "tokenizer", "dtype", "budget_s", "device",
                  "max_item_matrix_gib", "encode_batch", "score_buffer_mib"},
}
DTYPES = ("float32", "bfloat16", "float16")


class ThroughputError(ValueError):
    """A bad throughput suite: one line naming the file, key, value and what is allowed."""


# ---------------------------------------------------------------- config

def load_config(path: str | Path) -> dict:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ThroughputError(f"{path}: cannot read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ThroughputError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return validate(raw, str(path))


def validate(raw, where: str) -> dict:
    def fail(key, msg):
        raise ThroughputError(f"{where}: {key}: {msg}")

    if not isinstance(raw, dict):
        fail("(top)", "expected a mapping of keys")
    for key in raw:
        if key not in TOP_KEYS:
            fail(key, f"unknown key; allowed: {', '.join(sorted(TOP_KEYS))}")
    cfg = {"name": str(raw.get("name", Path(where).stem)), "description": str(raw.get("description", "")),
           "seed": raw.get("seed", 0), "top_k": raw.get("top_k", 10), "threads": raw.get("threads"),
           "item_texts": raw.get("item_texts", "movielens")}
    if not isinstance(cfg["item_texts"], str):
        fail("item_texts", f"{cfg['item_texts']!r}: expected movielens or a text file")
    for key in ("items", "requests"):
        v = raw.get(key)
        if (not isinstance(v, list) or not v
                or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in v)):
            fail(key, f"{v!r}: expected a non-empty list of positive integers")
        cfg[key] = sorted(set(v))
    for key in ("seed", "top_k"):
        if not isinstance(cfg[key], int) or cfg[key] < (1 if key == "top_k" else 0):
            fail(key, f"{cfg[key]!r}: expected a {'positive' if key == 'top_k' else 'non-negative'}"
                      " integer")
    if cfg["threads"] is not None and (not isinstance(cfg["threads"], int) or cfg["threads"] < 1):
        fail("threads", f"{cfg['threads']!r}: expected a positive integer")
    paths = raw.get("paths")
    if not isinstance(paths, list) or not paths:
        fail("paths", "expected a non-empty list of {method: direct|distilled, ...}")
    cfg["paths"] = [_validate_path(p, f"paths[{i}]", fail) for i, p in enumerate(paths)]
    return cfg


def _validate_path(p, key, fail) -> dict:
    if not isinstance(p, dict) or p.get("method") not in PATH_KEYS:
        fail(f"{key}.method", f"{(p or {}).get('method') if isinstance(p, dict) else p!r}: "
                              f"allowed: {', '.join(PATH_KEYS)}")
    method = p["method"]
    for k in p:
        if k not in PATH_KEYS[method]:
            fail(f"{key}.{k}", f"unknown key for {method}; allowed: "
                               f"{', '.join(sorted(PATH_KEYS[method]))}")
    archs = LLM_ARCHS if method == "direct" else ENCODER_ARCHS
    if ("model" in p) == ("random_arch" in p):
        fail(key, "give exactly one of model (real weights) or random_arch "
                  f"({', '.join(archs)})")
    if "random_arch" in p:
        if p["random_arch"] not in archs:
            fail(f"{key}.random_arch", f"{p['random_arch']!r}: allowed: {', '.join(archs)}")
        if "tokenizer" not in p:
            fail(f"{key}.tokenizer", "a random_arch needs a tokenizer (packaged alias or folder)")
    out = {"method": method, "dtype": p.get("dtype", "float32"),
           "budget_s": p.get("budget_s", 120), "device": p.get("device"),
           **{k: p[k] for k in ("model", "random_arch", "tokenizer") if k in p}}
    if out["dtype"] not in DTYPES:
        fail(f"{key}.dtype", f"{out['dtype']!r}: allowed: {', '.join(DTYPES)}")
    for k in ("budget_s", "max_item_matrix_gib"):
        v = p.get(k, 1)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < float("inf"):
            fail(f"{key}.{k}", f"{v!r}: expected a positive number")
    if out["device"] is not None and not str(out["device"]).startswith(("cpu", "cuda")):
        fail(f"{key}.device", f"{out['device']!r}: allowed: cpu, cuda, cuda:N (default: cuda "
                              "where there is a GPU)")
    if method == "direct":
        out["backend"] = p.get("backend", "hf")
        if out["backend"] != "hf":
            fail(f"{key}.backend", f"{out['backend']!r}: only hf is measured in-process here")
        out["batch_size"] = p.get("batch_size", 32)
    else:
        out["max_item_matrix_gib"] = p.get("max_item_matrix_gib", 4)
        out["encode_batch"] = p.get("encode_batch", 64)
        out["score_buffer_mib"] = p.get("score_buffer_mib", 256)
    for k in ("batch_size", "encode_batch", "score_buffer_mib"):
        if k in out and (not isinstance(out[k], int) or out[k] < 1):
            fail(f"{key}.{k}", f"{out[k]!r}: expected a positive integer")
    return out


def path_label(p: dict) -> str:
    name = p.get("model") or p["random_arch"]
    return f"{p['method']}: {name}{' (random weights)' if 'random_arch' in p else ''}, {p['dtype']}"


# ---------------------------------------------------------------- inputs

def request_texts(n: int) -> list[str]:
    """n distinct, plausible requests (phrasing × genre × occasion)."""
    phrasings = ["I'd like {g} movie {o}.", "Show me {g} film {o}.",
                 "Any good {g} picture {o}?", "Looking for {g} movie to watch {o}.",
                 "Recommend me {g} film {o}, please."]
    genres = ["a horror", "a crime", "a funny", "a romantic", "a war", "a sci-fi", "an animated",
              "a musical", "a documentary", "a thriller", "an adventure", "a children's"]
    occasions = ["tonight", "this weekend", "with my family", "on a rainy day", "after work",
                 "with friends", "on a long flight", "for a date night", "on my own",
                 "before bed", "on Sunday", "with my kids", "for a movie club", "on a holiday",
                 "to cheer me up", "that is not too long", "from the nineties",
                 "that critics loved", "I have not seen", "with a twist"]
    out = [p.format(g=g, o=o) for o in occasions for g in genres for p in phrasings]
    return [out[i % len(out)] + ("" if i < len(out) else f" (#{i})") for i in range(n)]


def item_texts(spec: str) -> list[str]:
    """MovieLens item texts (title, year, genres), or one text per line of a file."""
    if spec != "movielens":
        texts = [x.strip() for x in Path(spec).read_text().splitlines() if x.strip()]
        if not texts:
            raise ThroughputError(f"item_texts: {spec}: no lines")
        return texts
    from ctrlrec.data import item_texts as ml_texts, load_movielens
    return list(ml_texts(load_movielens().items))


def _resolve_tokenizer(name: str) -> str:
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    from ctrlrec.embeddings import PACKAGED
    if name in PACKAGED:
        from ctrlrec.embeddings import resolve_model
        return resolve_model(name)
    from ctrlrec.llm.models import resolve_llm
    return resolve_llm(name)


# ---------------------------------------------------------------- hardware

def hardware(device: str, dtypes: list[str], threads: int) -> dict:
    """Device name, memory bandwidth and peak FLOP/s per dtype: data-sheet figures for known GPUs
    (16-bit tensor-core peak), measured otherwise (torch sum over 1 GiB; a 2048² matmul per
    dtype). Measured values are recorded beside the data-sheet ones."""
    import torch

    info = {"device": device, "torch": torch.__version__, "threads": threads,
            "platform": platform.platform(), "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count()}
    spec = None
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
        spec = next((v for k, v in GPU_SPECS.items() if k in info["gpu"]), None)
    x = torch.ones(256 * 2**20, dtype=torch.float32, device=device)  # 1 GiB
    info["measured_bandwidth"] = x.numel() * 4 / _best_time(lambda: x.sum().item(), device)
    info["measured_matmul_flops"] = {}
    for dtype in sorted(set(dtypes)):
        a = torch.randn(2048, 2048, dtype=getattr(torch, dtype), device=device)
        info["measured_matmul_flops"][dtype] = 2 * 2048**3 / _best_time(
            lambda: (a @ a)[0, 0].item(), device)
    info["bandwidth"] = spec[0] if spec else info["measured_bandwidth"]
    info["peak_flops"] = {d: spec[1] if spec and d != "float32" else f
                          for d, f in info["measured_matmul_flops"].items()}
    info["floors_source"] = ("data sheet (bandwidth, 16-bit peak)" if spec
                             else "measured on this machine")
    return info


def peak_flops(hw: dict, dtype: str) -> float:
    """Peak FLOP/s for a dtype (older measurement files hold a single number)."""
    v = hw["peak_flops"]
    return v.get(dtype, max(v.values())) if isinstance(v, dict) else v


def _sync(device: str) -> None:
    if device == "cuda":
        import torch
        torch.cuda.synchronize()


def _best_time(fn, device: str, repeats: int = 3) -> float:
    fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return min(times)


def _timed(fn, device: str) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


# ---------------------------------------------------------------- direct path

def build_llm(p: dict, device: str):
    """The hf backend as the product builds it, or a random-weight model of a real shape."""
    import torch

    from ctrlrec.llm.backends import HFBackend

    if "model" in p:
        return HFBackend(p["model"], dtype=p["dtype"], device=device, batch_size=p["batch_size"])
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, Qwen2Config, \
        Qwen2ForCausalLM
    tok = AutoTokenizer.from_pretrained(_resolve_tokenizer(p["tokenizer"]))
    family, fields = LLM_ARCHS[p["random_arch"]]
    cfg_cls, model_cls = ((LlamaConfig, LlamaForCausalLM) if family == "llama"
                          else (Qwen2Config, Qwen2ForCausalLM))
    torch.manual_seed(0)
    torch.set_default_dtype(getattr(torch, p["dtype"]))
    try:
        with torch.device(device):
            model = model_cls(cfg_cls(vocab_size=len(tok), **fields))
    finally:
        torch.set_default_dtype(torch.float32)
    return HFBackend.from_objects(model, tok, f"{p['random_arch']} (random weights)",
                                  batch_size=p["batch_size"])


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
        dt = _timed(lambda: be.rate(prompts), device)
        spent += dt
        rate = n / dt
        rows.append({"path": info["label"], "method": "direct", "items": n_items,
                     "requests": n_req, "seconds": dt})
        log(f"  {info['label']}: {n_items} items × {n_req} requests: {dt:.2f} s "
            f"({rate:.1f} prompts/s)")
    return info, rows


# ---------------------------------------------------------------- distilled path

def build_encoder(p: dict, device: str, workdir: Path):
    """The sentence-transformers encoder as the product loads it; a random-weight encoder of a
    real shape is saved to `workdir` first and loaded through the same path."""
    import torch

    from ctrlrec.embeddings import load_encoder

    name = p.get("model")
    if name is None:
        from transformers import AutoTokenizer, BertConfig, BertModel
        tok = AutoTokenizer.from_pretrained(_resolve_tokenizer(p["tokenizer"]))
        torch.manual_seed(0)
        model = BertModel(BertConfig(vocab_size=len(tok), **ENCODER_ARCHS[p["random_arch"]]))
        name = str(workdir / p["random_arch"])
        model.save_pretrained(name)
        tok.save_pretrained(name)
    enc = load_encoder(name, device=device, threads=torch.get_num_threads())
    return enc.to(getattr(torch, p["dtype"]))


def measure_distilled(p: dict, cfg: dict, device: str, log) -> tuple[dict, list]:
    import torch

    from ctrlrec.retrieval import topk_dot

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        enc = build_encoder(p, device, Path(tmp))
    from ctrlrec.embeddings import embedding_dim
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
        dt = _timed(lambda: encode(n_req), device)
        enc_s[n_req] = min(dt, _timed(lambda: encode(n_req), device)) if dt < 1 else dt
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
            dt = _timed(score, device)
            if dt < 1:  # short: take the best of a few repeats
                dt = min([dt] + [_timed(score, device) for _ in range(2)])
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

    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    result = {"config": cfg, "suite_file": source, "paths": [], "rows": [],
              "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    devices = {p.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
               for p in cfg["paths"]}
    device = devices.pop() if len(devices) == 1 else "mixed"
    result["hardware"] = hardware("cuda" if device == "cuda" else "cpu",
                                  [p["dtype"] for p in cfg["paths"]], torch.get_num_threads())
    items = None
    for p in cfg["paths"]:
        dev = p.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
        log(f"measuring {path_label(p)} on {dev}")
        if p["method"] == "direct":
            items = items or item_texts(cfg["item_texts"])
            info, rows = measure_direct(p, cfg, dev, items, log)
        else:
            info, rows = measure_distilled(p, cfg, dev, log)
        info["device"] = dev
        result["paths"].append(info)
        result["rows"] += rows
        if dev == "cuda":
            info["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
            torch.cuda.empty_cache()
        if checkpoint:
            checkpoint(result)
    return result


# ---------------------------------------------------------------- cost models

def _design(method: str, part: str, items, requests) -> np.ndarray:
    n, r = np.asarray(items, float), np.asarray(requests, float)
    if method == "direct":            # fixed + per request (prefix) + per prompt
        return np.stack([np.ones_like(n), r, r * n], 1)
    if part == "encode":              # fixed + per request
        return np.stack([np.ones_like(r), r], 1)
    return np.stack([np.ones_like(n), n, r * n], 1)   # fixed + streaming items + products


TERMS = {"direct": ["fixed_s", "per_request_s", "per_prompt_s"],
         "encode": ["fixed_s", "per_request_s"],
         "score": ["fixed_s", "per_item_s", "per_item_request_s"]}


def fit_part(method: str, part: str, items, requests, seconds) -> dict:
    """Non-negative least squares on relative error (every cell weighs the same whatever its
    size); error = relative residuals in-sample and leave-one-out."""
    from scipy.optimize import nnls

    X = _design(method, part, items, requests)
    y = np.asarray(seconds, float)
    W = X / y[:, None]

    def solve(mask):
        return nnls(W[mask], np.ones(mask.sum()))[0]

    coef = solve(np.ones(len(y), bool))
    rel = X @ coef / y - 1
    loo = []
    if len(y) > X.shape[1]:
        for i in range(len(y)):
            m = np.ones(len(y), bool)
            m[i] = False
            loo.append(float(X[i] @ solve(m) / y[i] - 1))
    key = "direct" if method == "direct" else part
    return {"terms": dict(zip(TERMS[key], map(float, coef))), "points": int(len(y)),
            "max_rel_error": float(np.abs(rel).max()), "median_rel_error": float(np.median(np.abs(rel))),
            "loo_max_rel_error": float(np.abs(loo).max()) if loo else None}


def fit_models(meas: dict) -> dict:
    models = {}
    for info in meas["paths"]:
        rows = [r for r in meas["rows"] if r["path"] == info["label"]]
        if not rows:
            continue
        it, rq = [r["items"] for r in rows], [r["requests"] for r in rows]
        if info["method"] == "direct":
            models[info["label"]] = {"direct": fit_part("direct", "", it, rq,
                                                        [r["seconds"] for r in rows])}
        else:
            enc = {r["requests"]: r["encode_seconds"] for r in rows}
            models[info["label"]] = {
                "encode": fit_part("distilled", "encode", list(enc), list(enc),
                                   list(enc.values())),
                "score": fit_part("distilled", "score", it, rq, [r["score_seconds"] for r in rows])}
    return models


def predict(model: dict, method: str, items: float, requests: float) -> float:
    if method == "direct":
        t = model["direct"]["terms"]
        return t["fixed_s"] + t["per_request_s"] * requests + t["per_prompt_s"] * requests * items
    e, s = model["encode"]["terms"], model["score"]["terms"]
    return (e["fixed_s"] + e["per_request_s"] * requests + s["fixed_s"] + s["per_item_s"] * items
            + s["per_item_request_s"] * items * requests)


def floor_seconds(info: dict, hw: dict, items: float, requests: float) -> float:
    """Distilled: the item matrix read once (bytes / bandwidth). Direct: the model's FLOPs for the
    tokens it must process with prefix reuse (2 × params × tokens) / peak FLOP/s."""
    if info["method"] == "distilled":
        return items * info["dim"] * info["bytes_per_value"] / hw["bandwidth"]
    tokens = requests * info["prefix_tokens"] + requests * items * info["suffix_tokens"]
    flops = 2 * info["body_params"] * tokens + 2 * info["head_params"] * requests * items
    return flops / peak_flops(hw, info["dtype"])


def grid_table(meas: dict, models: dict) -> list[dict]:
    """Every path × cell: seconds (measured, else extrapolated), items·requests per second, floor."""
    measured = {(r["path"], r["items"], r["requests"]): r["seconds"] for r in meas["rows"]}
    out = []
    for info in meas["paths"]:
        if info["label"] not in models:
            continue
        for n in meas["config"]["items"]:
            for r in meas["config"]["requests"]:
                key = (info["label"], n, r)
                sec = measured.get(key)
                source = "measured" if sec is not None else "extrapolated"
                if sec is None:
                    sec = predict(models[info["label"]], info["method"], n, r)
                out.append({"path": info["label"], "method": info["method"], "items": n,
                            "requests": r, "seconds": sec, "source": source,
                            "pairs_per_s": n * r / sec,
                            "floor_seconds": floor_seconds(info, meas["hardware"], n, r)})
    return out


# ---------------------------------------------------------------- report

def _fmt_s(x: float) -> str:
    if x >= 86400 * 365:
        return f"{x / (86400 * 365):.3g} years"
    if x >= 86400:
        return f"{x / 86400:.3g} days"
    if x >= 1:
        return f"{x:.3g} s"
    return f"{x * 1e3:.3g} ms"


def _per_dtype(flops) -> str:
    if not isinstance(flops, dict):
        return f"{flops / 1e12:.2f} TFLOP/s"
    return ", ".join(f"{v / 1e12:.2f} TFLOP/s {d}" for d, v in flops.items())


def card_name(hw: dict) -> str:
    return hw.get("gpu") or f"CPU ({hw.get('cpu_count')} cores, {hw.get('threads')} torch threads)"


def report(meas: dict, out_dir: Path) -> str:
    import pandas as pd
    from tabulate import tabulate

    out_dir.mkdir(parents=True, exist_ok=True)
    models = fit_models(meas)
    grid = pd.DataFrame(grid_table(meas, models))
    grid.to_csv(out_dir / "cells.csv", index=False)
    (out_dir / "cost_models.json").write_text(json.dumps(models, indent=1))
    hw = meas["hardware"]
    random = any("random_arch" in p for p in meas["paths"])
    lines = [f"# Throughput: {meas['config']['name']}", "",
             f"Hardware: **{card_name(hw)}**, torch {hw['torch']}. "
             f"Floors from {hw['floors_source']}: bandwidth {hw['bandwidth'] / 1e9:.0f} GB/s, "
             f"peak {_per_dtype(hw['peak_flops'])} "
             f"(measured here: {hw['measured_bandwidth'] / 1e9:.0f} GB/s, "
             f"{_per_dtype(hw['measured_matmul_flops'])}). Created {meas['created_utc']}.", ""]
    if random:
        lines += ["**Random-weight rows**: paths marked *(random weights)* use randomly "
                  "initialised models of the real architecture; their throughput is that of the "
                  "real model, their outputs mean nothing.", ""]
    lines += ["## Paths", ""]
    for p in meas["paths"]:
        extra = (f"{p['prefix_tokens']:.0f} prefix + {p['suffix_tokens']:.1f} suffix tokens per "
                 f"prompt, batch {p['batch_size']}" if p["method"] == "direct"
                 else f"dim {p['dim']}, top-{meas['config']['top_k']}, encode batch "
                      f"{p['encode_batch']}")
        stop = p.get("memory_stop") or p.get("budget_stop")
        lines.append(f"- {p['label']} on {p['device']}: {p['params'] / 1e9:.3g} B parameters; "
                     f"{extra}; budget {p['budget_s']} s" + (f"; stopped: {stop}" if stop else ""))
    lines += ["", "## Cost models (fitted to the measured cells; relative error in-sample, "
                  "leave-one-out)", ""]
    for label, parts in models.items():
        for part, m in parts.items():
            terms = ", ".join(f"{k} = {v:.3g}" for k, v in m["terms"].items())
            loo = (f", leave-one-out max {m['loo_max_rel_error']:.0%}"
                   if m["loo_max_rel_error"] is not None else "")
            lines.append(f"- {label} [{part}]: {terms}; {m['points']} points, max error "
                         f"{m['max_rel_error']:.0%}, median {m['median_rel_error']:.0%}{loo}")
    lines += ["", "## Seconds per batch of requests (M = measured, E = extrapolated)", ""]
    direct = [p["label"] for p in meas["paths"] if p["method"] == "direct" and p["label"] in models]
    dist = [p["label"] for p in meas["paths"] if p["method"] == "distilled" and p["label"] in models]
    for d in direct:
        for s in dist:
            lines += [f"Direct = {d}; distilled = {s}.", "", _pair_table(grid, d, s, tabulate), ""]
            big = grid[(grid["items"] == grid["items"].max())
                       & (grid["requests"] == grid["requests"].max())]
            sp = (big[big.path == d].seconds.iloc[0] / big[big.path == s].seconds.iloc[0])
            lines += [f"**Speedup at {int(big['items'].iloc[0]):,} items × "
                      f"{int(big['requests'].iloc[0]):,} requests: {sp:.2g}×** (paper: ≥ 10^8).", ""]
    dist_rows = grid[(grid.method == "distilled") & (grid.source == "measured")]
    if len(dist_rows):
        lines += ["## Distilled product vs. the memory-bandwidth floor (measured cells)", "",
                  "The FLOP floor (2 × requests × items × dim / peak) takes over from the "
                  "bandwidth floor when many requests share one pass over the items.", "",
                  tabulate([[r.path, f"{r['items']:,}", r.requests,
                             _fmt_s(r.seconds), _fmt_s(r.floor_seconds), _fmt_s(r.flop_floor),
                             f"{max(r.floor_seconds, r.flop_floor) / r.seconds:.0%}"]
                            for _, r in _score_only(dist_rows, meas).iterrows()],
                           ["path", "items", "requests", "matmul + top-k", "bandwidth floor",
                            "FLOP floor", "max floor / time"], tablefmt="github"), ""]
    text = "\n".join(lines)
    (out_dir / "table.md").write_text(text)
    plot(grid, meas, out_dir / "throughput.png")
    return text


def _score_only(rows, meas):
    """The product time without request encoding, for comparison with the bandwidth floor."""
    score = {(r["path"], r["items"], r["requests"]): r["score_seconds"] for r in meas["rows"]
             if r["method"] == "distilled"}
    dims = {p["label"]: p["dim"] for p in meas["paths"] if p["method"] == "distilled"}
    rows = rows.copy()
    rows["seconds"] = [score[(p, n, r)] for p, n, r in zip(rows.path, rows["items"], rows.requests)]
    dtypes = {p["label"]: p["dtype"] for p in meas["paths"]}
    rows["flop_floor"] = [2 * n * r * dims[p] / peak_flops(meas["hardware"], dtypes[p])
                          for p, n, r in zip(rows.path, rows["items"], rows.requests)]
    top = rows.groupby("path")["items"].transform("max")  # the largest measured matrices
    return rows[(rows["items"] == top) & rows.requests.isin([min(rows.requests),
                                                             max(rows.requests)])]


def _pair_table(grid, d, s, tabulate) -> str:
    rows = []
    for (n, r), g in grid.groupby(["items", "requests"], sort=True):
        a, b = g[g.path == d].iloc[0], g[g.path == s].iloc[0]
        rows.append([f"{n:,}", f"{r:,}", f"{_fmt_s(a.seconds)} {a.source[0].upper()}",
                     f"{a.pairs_per_s:.3g}", f"{_fmt_s(b.seconds)} {b.source[0].upper()}",
                     f"{b.pairs_per_s:.3g}", f"{a.seconds / b.seconds:.3g}×"])
    return tabulate(rows, ["items", "requests", "direct", "direct items/s", "distilled",
                           "distilled items/s", "speedup"], tablefmt="github")


def plot(grid, meas: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reqs = meas["config"]["requests"]
    cols = min(2, len(reqs))
    rws = (len(reqs) + cols - 1) // cols
    fig, axes = plt.subplots(rws, cols, figsize=(6 * cols, 4.2 * rws), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, r in zip(axes.flat, reqs):
        for ci, (label, g) in enumerate(grid[grid.requests == r].groupby("path", sort=False)):
            g = g.sort_values("items")
            c = colours[ci % len(colours)]
            ax.plot(g["items"], g.seconds, "--", color=c, lw=1, alpha=0.7)
            m = g[g.source == "measured"]
            ax.plot(m["items"], m.seconds, "o-", color=c, label=label)
            floor = "bandwidth floor" if g.method.iloc[0] == "distilled" else "FLOP floor"
            ax.plot(g["items"], g.floor_seconds, ":", color=c, lw=1,
                    label=f"{floor} ({label.split(':')[0]})")
        ax.set(xscale="log", yscale="log", xlabel="candidate items per request",
               ylabel="seconds per batch", title=f"{r:,} concurrent request(s)")
        ax.grid(True, which="major", alpha=0.3)
    for ax in list(axes.flat)[len(reqs):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, loc="upper left")
    fig.suptitle(f"Cost of one batch of feeds on {card_name(meas['hardware'])}: solid = measured, "
                 "dashed = extrapolated, dotted = floor", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------- entry points

def default_out(meas: dict) -> Path:
    hw = meas["hardware"]
    slug = (hw.get("gpu") or f"cpu{hw.get('cpu_count')}").split()[-1].lower()
    return Path("results") / "throughput" / f"{meas['config']['name']}-{slug}"


def run(args) -> int:
    if args.from_file:
        try:
            meas = json.loads(Path(args.from_file).read_text())
        except (OSError, ValueError) as exc:
            raise ThroughputError(f"{args.from_file}: not a readable measurements file "
                                  f"({type(exc).__name__})") from None
    else:
        cfg = load_config(args.suite)
        out = Path(args.out) if args.out else None

        def save(result):  # after each path, so a run cut off keeps the finished paths
            folder = out or default_out(result)
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / "measurements.json.tmp"
            tmp.write_text(json.dumps(result, indent=1, default=str))
            tmp.replace(folder / "measurements.json")
        meas = measure(cfg, log=lambda s: print(s, flush=True), source=str(args.suite),
                       checkpoint=save)
    out = Path(args.out) if args.out else default_out(meas)
    out.mkdir(parents=True, exist_ok=True)
    if args.measure_only:
        print(f"measurements: {out / 'measurements.json'}")
        return 0
    print(report(meas, out))
    print(f"\nwritten: {out}/ (measurements.json, cells.csv, cost_models.json, table.md, "
          "throughput.png)")
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("suite", nargs="?", default="suites/throughput.yaml")
    p.add_argument("--out", help="output folder (default: results/throughput/<name>-<device>/)")
    p.add_argument("--from", dest="from_file", metavar="MEASUREMENTS_JSON",
                   help="only fit, tabulate and plot an earlier measurements.json")
    p.add_argument("--measure-only", action="store_true",
                   help="write measurements.json only (bare GPU machines: no pandas/matplotlib)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.throughput")
    add_arguments(ap)
    args = ap.parse_args(argv)
    try:
        return run(args)
    except ThroughputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
