"""Checking a feed judge before its grades are trusted: planted feeds and the judge's separation.

For each distinct request, feeds that plainly fit it and feeds that plainly do not are planted;
the judge grades them like any recommended list, and its separation is measured: the AUC (the
chance that a fitting feed outgrades an unfitting one, ties counting half) and the mean gap of
the grades. A judge that cannot tell these apart cannot rank methods either.

What fits a request is decided by categories (genres), the only ground truth the data holds:
- a category request (genre suites): its requested category (basis `requested`);
- an open-ended request that names categories, found as request generation finds them
  (`detect_genres`): those categories (basis `named`);
- any other open-ended request: the category most over-represented among the user's liked items
  in the half the request writer saw (basis `history`). The writer wrote the request from those
  items, so it should agree with them, but this is the weakest basis; the report shows each
  basis apart.
A fitting feed holds k items carrying as many of the target categories as k items can (all of
them when k items carry all). An unfitting feed holds k items carrying no target category and no
category that co-occurs with a target more often than chance in the catalogue (lift > 1), so a
thriller request is never given a crime film as a clear miss. Items without a known category
are never planted."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pandas as pd

from .data import MOVIELENS, Split
from .datasets import DatasetInfo

MIN_AUC = 0.8  # below this the report warns that the judge does not discriminate
BASES = ("requested", "named", "history")


def related_categories(flags: np.ndarray, names: list[str], targets) -> set[str]:
    """The targets and every category whose share among the targets' items exceeds its share in
    the catalogue (items × categories boolean `flags`)."""
    f = np.asarray(flags, dtype=float)
    share = f.mean(axis=0)
    out = set(targets)
    for t in targets:
        with_t = f[f[:, names.index(t)] > 0]
        if len(with_t):
            lift = with_t.mean(axis=0) / np.maximum(share, 1e-12)
            out |= {names[j] for j in np.flatnonzero(lift > 1)}
    return out


def request_targets(requests: pd.DataFrame, split: Split, items: pd.DataFrame,
                    info: DatasetInfo = MOVIELENS, part: str = "test") -> list[tuple]:
    """(target categories, basis) of each request row; `part`: the half the request writer saw."""
    from .requests import detect_genres, pick_genres

    asked = requests["genre"] if "genre" in requests else pd.Series([None] * len(requests))
    out = [((g,), "requested") if isinstance(g, str) else
           (tuple(detect_genres(t, info)), "named") for g, t in zip(asked, requests.text)]
    rest = [r for r, (found, _) in enumerate(out) if not found]
    if rest:
        # pick_genres reads a split's train half: hand it the half the writer saw
        seen = dataclasses.replace(split, train=split.test) if part == "test" else split
        users = requests.user_id.to_numpy()[rest]
        for r, g in zip(rest, pick_genres(seen, items, users, "lift", info=info)):
            out[r] = ((str(g),), "history")
    return out


def planted_feeds(requests: pd.DataFrame, split: Split, items: pd.DataFrame, k: int,
                  info: DatasetInfo = MOVIELENS, per_request: int = 1,
                  max_requests: int | None = None, seed: int = 0,
                  part: str = "test") -> pd.DataFrame:
    """One row per planted feed: `request` (the first request row with this text and these
    targets), user_id, text, targets ('A|B'), basis, pair (0..per_request-1), label (1: fits,
    0: does not) and items (k item ids, in the order shown). A distinct request is a distinct
    (text, targets); at most `max_requests` of them, a seeded sample, are planted. A request
    without k fitting and k unfitting items is left out."""
    names = list(info.categories)
    flags = items[names].to_numpy(dtype=bool)
    known = flags[:, [n != "unknown" for n in names]].any(axis=1)
    ids = items.item_id.to_numpy()
    targets = request_targets(requests, split, items, info, part)
    units: dict[tuple, int] = {}
    for r, (text, (tgt, _)) in enumerate(zip(requests.text, targets)):
        units.setdefault((text, tgt), r)
    rows = list(units.values())
    if max_requests is not None and len(rows) > max_requests:
        rows = sorted(np.random.default_rng(seed).choice(rows, max_requests, replace=False))
    out = []
    for r in rows:
        tgt, basis = targets[r]
        cols = [names.index(t) for t in tgt]
        carried = flags[:, cols].sum(axis=1)
        fits = None
        for c in range(len(cols), 0, -1):  # as many targets as k items can carry
            if (known & (carried >= c)).sum() >= k:
                fits = known & (carried >= c)
                break
        misses = known & ~flags[:, [names.index(n) for n in
                                    related_categories(flags, names, tgt)]].any(axis=1)
        if misses.sum() < k:  # a target related to nearly everything: drop the related ones
            misses = known & (carried == 0)
        if fits is None or misses.sum() < k:
            continue
        for j in range(per_request):
            rng = np.random.default_rng([seed, int(r), j])
            for label, pool in ((1, fits), (0, misses)):
                chosen = rng.choice(ids[pool], k, replace=False)
                out.append((int(r), int(requests.user_id.iloc[r]), requests.text.iloc[r],
                            "|".join(tgt), basis, j, label, [int(i) for i in chosen]))
    return pd.DataFrame(out, columns=["request", "user_id", "text", "targets", "basis", "pair",
                                      "label", "items"])


def separation(grades, labels) -> dict:
    """How well grades separate fitting (label 1) from unfitting (0) feeds: AUC (Mann-Whitney U
    over n_pos·n_neg pairs, ties half), mean gap, both means, one-sided p-value (fitting graded
    higher). Ungraded (NaN) feeds are left out and counted."""
    from scipy.stats import mannwhitneyu

    g = np.asarray(grades, dtype=float)
    y = np.asarray(labels).astype(bool)
    ok = ~np.isnan(g)
    pos, neg = g[ok & y], g[ok & ~y]
    out = {"n_pos": len(pos), "n_neg": len(neg), "ungraded": int((~ok).sum()),
           "auc": float("nan"), "gap": float("nan"), "mean_pos": float("nan"),
           "mean_neg": float("nan"), "p_value": float("nan")}
    if len(pos) and len(neg):
        with warnings.catch_warnings():  # all grades equal: U is defined, its p-value is not
            warnings.simplefilter("ignore", RuntimeWarning)
            test = mannwhitneyu(pos, neg, alternative="greater")
        out.update(auc=float(test.statistic) / (len(pos) * len(neg)),
                   gap=float(pos.mean() - neg.mean()), mean_pos=float(pos.mean()),
                   mean_neg=float(neg.mean()), p_value=float(test.pvalue))
    return out
