"""Stages that score feeds: the sweep over w and k (genre accuracy, precision, recall, NDCG) and
the feed-level LLM judge."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from ctrlrec import aggregate, metrics
from ctrlrec.data import ML_GENRES

from .data import split_of
from .llm import llm_stats, open_llm


def sweep_stage(cfg: dict, ds: dict, eng: dict, vals: dict, req: dict, pool: dict) -> dict:
    """Rank-aggregate and score one slice of users for every w and k (cfg['rows'] picks the slice)."""
    t0 = time.perf_counter()
    split = split_of(ds)
    lo, hi = cfg["rows"]
    requests = req["requests"].iloc[lo:hi]
    rows = split.user_index(requests.user_id)
    candidates = pool["pool"][lo:hi]
    test = split.matrix("test")[rows]
    genre_flags = ds["items"][ML_GENRES].to_numpy(dtype=bool)
    has_genre = requests.genre.notna().to_numpy()
    requested = np.array([ML_GENRES.index(g) if isinstance(g, str) else 0 for g in requests.genre])
    ws, ks = cfg["ws"], sorted(cfg["ks"])
    tops = aggregate.sweep(cfg["aggregation"], eng["scores"][rows], vals["values"][lo:hi],
                           candidates, ws, max(ks))
    frames = []
    for wi, w in enumerate(ws):
        for k in ks:
            top = tops[wi][:, :k]
            frames.append(pd.DataFrame({
                "user_id": requests.user_id.to_numpy(), "w_control": w, "k": k,
                "genre_accuracy": np.where(
                    has_genre, metrics.genre_accuracy_at_k(top, genre_flags, requested), np.nan),
                "precision": metrics.precision_at_k(top, test),
                "recall": metrics.recall_at_k(top, test),
                "ndcg": metrics.ndcg_at_k(top, test),
            }))
    item_ids = split.item_ids[tops]  # (w, users, kmax)
    return {"per_user": pd.concat(frames, ignore_index=True),
            "recs": item_ids.astype(np.int32),
            "timing": {"seconds": time.perf_counter() - t0}}


def judge_stage(cfg: dict, ds: dict, req: dict, *sweeps: dict) -> dict:
    """Feed-level judge: an LLM grades each top-k list against the request (1-5, expected rating
    from the digit probabilities), normalised to [0, 1]. Each distinct (user, feed) is judged once,
    however many w values, methods or contexts produce it. Grades whose digit mass is below
    `mass_threshold` are kept out of the averages and counted."""
    from ctrlrec.llm import backends
    from ctrlrec.llm.prompts import judge_chat, judge_listing
    from ctrlrec.progress import progress

    cached, tokenizer = open_llm(cfg["llm"], cfg.get("_runtime"))
    requests = req["requests"].reset_index(drop=True)
    texts = ds["items"].set_index("item_id").text
    templates = [backends.render(tokenizer, judge_chat(t)) for t in requests.text]
    ws_all = cfg["sweep_ws"]
    judged_w = [i for i, w in enumerate(ws_all) if cfg["ws"] is None or w in cfg["ws"]]
    feeds: dict[tuple, int] = {}
    rows = []
    for (method, ctx, agg, lo, hi), out in zip(cfg["sweeps"], sweeps):
        recs = out["recs"]
        for wi in judged_w:
            for k in cfg["ks"]:
                for r in range(hi - lo):
                    feed = (lo + r, tuple(int(i) for i in recs[wi, r, :k]))
                    idx = feeds.setdefault(feed, len(feeds))
                    rows.append((method, ctx, agg, int(requests.user_id[lo + r]), ws_all[wi], k, idx))
    prompts = [backends.fill(templates[row], judge_listing([texts[i] for i in items]))
               for row, items in feeds]
    bar = progress(total=len(prompts), desc="judge")
    ratings = cached.rate(prompts, progress_bar=bar)
    bar.close()
    grade = np.array([(r.expected - 1) / 4 for r in ratings])
    mass = np.array([r.mass for r in ratings])
    ok = mass >= cfg["mass_threshold"]
    df = pd.DataFrame(rows, columns=["method", "context", "aggregation", "user_id", "w_control",
                                     "k", "feed"])
    df["judge"] = np.where(ok, grade, np.nan)[df.feed]
    df["judge_mass"] = mass[df.feed]
    return {"per_user": df.drop(columns="feed"),
            "stats": {**llm_stats(cached, len(prompts)), "feeds_judged": len(prompts),
                      "cells_x_users": len(df), "low_mass": int((~ok).sum()),
                      "low_mass_rate": float((~ok).mean()) if len(ok) else 0.0}}
