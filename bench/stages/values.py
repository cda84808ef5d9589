"""The value matrices of the built-in methods (their registry entries are in bench/methods.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ctrlrec.data import Split

from .data import dataset_info, split_of
from .llm import llm_stats, open_llm


def untrained_values_stage(cfg: dict, emb: dict, req: dict) -> dict:
    from ctrlrec.embeddings import load_encoder
    from ctrlrec.values import untrained_values

    encoder = load_encoder(cfg["model"], dtype=cfg.get("dtype", "float32"))
    return {"values": untrained_values(encoder, req["requests"].text.tolist(), emb["emb"])}


def history_lines(split: Split, items: pd.DataFrame, n: int) -> dict[int, list[str]]:
    """Each user's n most recent train ratings as 'Title (year): r/5', newest first."""
    from ctrlrec.data import rating_lines

    recent = split.train.sort_values(["user_id", "timestamp", "item_id"]).groupby("user_id").tail(n)
    return rating_lines(recent.iloc[::-1], items)


def direct_values_stage(cfg: dict, ds: dict, req: dict, pool: dict) -> dict:
    """v = the LLM's expected 1-5 rating of each pooled item for the user's request.

    Ratings whose probability mass on the five digits is below `mass_threshold` are counted and,
    by policy, scored 1.0 (the lowest rating): the model did not understand the task for that
    item, so the request signal must not promote it; engagement can still recommend it."""
    from ctrlrec.llm import backends
    from ctrlrec.llm.prompts import rating_chat
    from ctrlrec.progress import progress

    cached, tokenizer = open_llm(cfg["llm"], cfg.get("_runtime"))
    split = split_of(ds)
    requests = req["requests"]
    ctx = cfg["context"]
    history = history_lines(split, ds["items"], int(ctx.split(":")[1])) if ctx != "none" else {}
    texts = ds["items"].text.to_numpy()
    words = dataset_info(ds).words
    prompts, where = [], []
    for row, (uid, text) in enumerate(zip(requests.user_id, requests.text)):
        tpl = backends.render(tokenizer, rating_chat(text, history.get(int(uid), []), words))
        cols = np.flatnonzero(pool["pool"][row])
        prompts += [backends.fill(tpl, texts[c]) for c in cols]
        where += [(row, c) for c in cols]
    bar = progress(total=len(prompts), desc=f"direct scoring ({ctx})")
    ratings = cached.rate(prompts, progress_bar=bar)
    bar.close()
    values = np.full(pool["pool"].shape, np.nan, dtype=np.float32)
    mass = np.full(pool["pool"].shape, np.nan, dtype=np.float32)
    for (r, c), rating in zip(where, ratings):
        values[r, c] = rating.expected
        mass[r, c] = rating.mass
    low = mass < cfg["mass_threshold"]
    values[low] = 1.0
    return {"values": values, "mass": mass,
            "stats": {**llm_stats(cached, len(prompts)), "low_mass": int(low.sum()),
                      "low_mass_rate": float(low.sum() / max(len(prompts), 1)),
                      "mean_mass": float(np.nanmean(mass)) if prompts else None}}


def distilled_values_stage(cfg: dict, student: dict, req: dict, split_info: dict | None = None) -> dict:
    """v = f(r)·g(i): one request embedding per request and one matrix product; no LLM call."""
    from ctrlrec.distill import TwoTower
    from ctrlrec.embeddings import needs_remote_code, resolve_model

    towers = TwoTower(resolve_model(cfg["model"]),
                      trust_remote_code=needs_remote_code(cfg["model"])).load_bytes(student["towers"])
    texts = req["requests"].text.tolist()
    unique, inverse = np.unique(np.asarray(texts, dtype=object), return_inverse=True)
    values = (towers.embed_requests(list(unique)) @ student["item_emb"].T)[inverse]
    trained_on = set(student["split"].request)
    return {"values": values.astype(np.float32),
            "stats": {"llm_calls": 0, "eval_requests_seen_in_training":
                      int(sum(t in trained_on for t in unique))}}
