"""Stages that score feeds: the sweep over w and k (genre accuracy, precision, recall, NDCG) and
the feed-level LLM judge."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from ctrlrec import aggregate, metrics

from .data import dataset_info, split_of


def sweep_stage(cfg: dict, ds: dict, eng: dict, vals: dict, req: dict, pool: dict) -> dict:
    """Rank-aggregate and score one slice of users for every w and k (cfg['rows'] picks the slice)
    over the frozen pool, or over every non-train item when cfg['pool'] is 'all'. Where the pool is
    a shortlist, each row also says where its top-k came from: `from_<nominator>`, the share of the
    top-k that nominator put forward, and `in_pool`, the share inside the shortlist.
    `genre_ceiling`: the best genre accuracy any ranking of the candidates could reach."""
    t0 = time.perf_counter()
    split = split_of(ds)
    lo, hi = cfg["rows"]
    requests = req["requests"].iloc[lo:hi]
    rows = split.user_index(requests.user_id)
    candidates = ~split.matrix("train")[rows] if cfg.get("pool") == "all" \
        else pool["pool"][lo:hi]
    test = split.matrix("test")[rows]
    # genre accuracy is category accuracy over the dataset's categories
    categories = list(dataset_info(ds).categories)
    genre_flags = ds["items"][categories].to_numpy(dtype=bool)
    has_genre = requests.genre.notna().to_numpy()
    requested = np.array([categories.index(g) if isinstance(g, str) else 0
                          for g in requests.genre])
    ws, ks = cfg["ws"], sorted(cfg["ks"])
    in_genre = (candidates & genre_flags[:, requested].T).sum(axis=1)  # requested-genre candidates
    try:
        tops = aggregate.sweep(cfg["aggregation"], eng["scores"][rows], vals["values"][lo:hi],
                               candidates, ws, max(ks))
    except aggregate.TooFewCandidates as exc:  # say who, and where the pool comes from
        over = "every non-train item" if cfg.get("pool") == "all" else "the pool's shortlist"
        raise ValueError(
            f"user {requests.user_id.iloc[exc.rows[0]]} has {exc.counts[0]} candidate items "
            f"({over}), fewer than k {exc.k} ({len(exc.rows)} such users among rows {lo}:{hi}): "
            "the top-k would hold items the user saw in train; lower k or nominate at least k "
            "items per user") from exc
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
                "genre_ceiling": np.where(has_genre, np.minimum(in_genre, k) / k, np.nan),
                **provenance_shares(pool, lo, hi, top),
            }))
    item_ids = split.item_ids[tops]  # (w, users, kmax)
    return {"per_user": pd.concat(frames, ignore_index=True),
            "recs": item_ids.astype(np.int32),
            "timing": {"seconds": time.perf_counter() - t0}}


def provenance_shares(pool: dict, lo: int, hi: int, top: np.ndarray) -> dict:
    """Per user, the share of the listed items that each nominator in use put forward, and the
    share inside the pool; nothing for a pool that is not a shortlist."""
    if "nominated" not in pool:
        return {}
    bits = np.take_along_axis(pool["nominated"][lo:hi], top, axis=1)
    used = int(np.bitwise_or.reduce(pool["nominated"], axis=None))  # the same for every slice
    out = {f"from_{name}": ((bits >> j) & 1).mean(axis=1)
           for j, name in enumerate(pool["nominators"]) if used >> j & 1}
    return {**out, "in_pool": np.take_along_axis(pool["pool"][lo:hi], top, axis=1).mean(axis=1)}


def judge_stage(cfg: dict, ds: dict, req: dict, *sweeps: dict) -> dict:
    """Feed judge: an LLM grades each top-k list against the request (1-5, expected rating from
    the digit probabilities), normalised to [0, 1]: the whole list at once (mode feed) or as the
    mean of its items' fit ratings (mode item; bench/stages/judge.py). Each distinct (user, feed)
    is judged once, however many w values, methods or contexts produce it. Grades whose digit
    mass is below `mass_threshold` are kept out of the averages and counted."""
    from .judge import grade_feeds

    requests = req["requests"].reset_index(drop=True)
    ws_all = cfg["sweep_ws"]
    judged_w = [i for i, w in enumerate(ws_all) if cfg["ws"] is None or w in cfg["ws"]]
    feeds: dict[tuple, int] = {}
    rows = []
    for (method, ctx, agg, lo, hi, over), out in zip(cfg["sweeps"], sweeps):
        recs = out["recs"]
        for wi in judged_w:
            for k in cfg["ks"]:
                for r in range(hi - lo):
                    feed = (lo + r, tuple(int(i) for i in recs[wi, r, :k]))
                    idx = feeds.setdefault(feed, len(feeds))
                    rows.append((method, ctx, agg, over, int(requests.user_id[lo + r]),
                                 ws_all[wi], k, idx))
    grade, mass, stats = grade_feeds(cfg, [(requests.text[row], items) for row, items in feeds],
                                     ds["items"], dataset_info(ds).words)
    df = pd.DataFrame(rows, columns=["method", "context", "aggregation", "pool", "user_id",
                                     "w_control", "k", "feed"])
    df["judge"] = grade[df.feed]
    df["judge_mass"] = mass[df.feed]
    return {"per_user": df.drop(columns="feed"), "stats": {**stats, "cells_x_users": len(df)}}
