"""Eq. 2 of CTRL-Rec and its alternatives: combine engagement and request scores into one ranking.

    score(u, i, r) = (1 - w) * f_eng(u, i) + w * v(u, i, r),   w = w_control in [0, 1]

Every rule takes users × items arrays `eng` and `req` plus a boolean `candidates` mask (False for
items the user already saw in train: they are never recommended) and returns, for every w at once,
the top-k item indices per user. The paper found the rank rule crucial: both signals become ranks
among the candidates, normalised to [0, 1], before the weighted sum.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy.stats import rankdata

RULES = ("rank", "minmax", "threshold", "multiplicative")


def rank01(scores: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Per user, candidate ranks scaled to [0, 1] (1 = best; ties share their average rank).

    Non-candidates get NaN."""
    masked = np.where(candidates, scores.astype(np.float64), -np.inf)
    ranks = rankdata(masked, axis=1, method="average")  # non-candidates tie at the bottom
    n_out = (~candidates).sum(axis=1, keepdims=True)
    n_in = candidates.sum(axis=1, keepdims=True)
    out = (ranks - n_out - 1) / np.maximum(n_in - 1, 1)
    return np.where(candidates, out, np.nan)


def minmax01(scores: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Per user, scores min-max scaled over the candidates (the paper's naive contrast)."""
    s = np.where(candidates, scores.astype(np.float64), np.nan)
    lo = np.nanmin(s, axis=1, keepdims=True)
    hi = np.nanmax(s, axis=1, keepdims=True)
    return (s - lo) / np.where(hi > lo, hi - lo, 1.0)


def _linear(e, r, w):
    return (1.0 - w) * e + w * r


def _threshold(e, r, w):
    # Keep items whose request rank is at least w; rank those by engagement, then the rest by
    # request rank. w = 0 is the engagement ranking; w = 1 is (nearly) the request ranking.
    return np.where(r >= w, 2.0 + e, r)


def _multiplicative(e, r, w):
    # Geometric weighting of ranks mapped into (0, 1] so that the worst item is not zeroed.
    return np.exp((1.0 - w) * np.log1p(e) + w * np.log1p(r))


_RULES: dict[str, tuple[Callable, Callable]] = {
    "rank": (rank01, _linear),
    "minmax": (minmax01, _linear),
    "threshold": (rank01, _threshold),
    "multiplicative": (rank01, _multiplicative),
}


def normalise(rule: str, eng: np.ndarray, req: np.ndarray, candidates: np.ndarray):
    """The two normalised score arrays that a rule combines (reusable across every w)."""
    norm, _ = _lookup(rule)
    return norm(eng, candidates), norm(req, candidates)


def combine(rule: str, e: np.ndarray, r: np.ndarray, w: float) -> np.ndarray:
    """The combined score for one w from normalised arrays; NaN marks non-candidates."""
    _, comb = _lookup(rule)
    return comb(e, r, w)


class TooFewCandidates(ValueError):
    """Rows with fewer than k candidates: their top-k could only be filled with non-candidates
    (items the user saw in train). `rows` and `counts`: those rows and their candidate counts."""

    def __init__(self, k: int, rows: np.ndarray, counts: np.ndarray):
        self.k, self.rows, self.counts = k, rows, counts
        super().__init__(f"top-{k} asked of {len(rows)} row(s) with fewer than {k} candidates "
                         f"(row {rows[0]}: {counts[0]}); a non-candidate is never recommended")


def top_k(scores: np.ndarray, k: int, tiebreak: np.ndarray | None = None) -> np.ndarray:
    """users × k column indices of the highest scores, best first; NaN (a non-candidate) is never
    chosen: a row with fewer than k non-NaN scores raises TooFewCandidates.

    Equal scores are ordered by `tiebreak` (in [0, 1], higher first; the sweep passes the engagement
    rank): it is added at a 1e-9 scale, far below the smallest gap between two distinct rank-based
    scores (about 1e-5 for 1,682 items), so it only decides ties."""
    key = scores.astype(np.float64, copy=True)
    out = np.isnan(key)
    counts = key.shape[1] - out.sum(axis=1)
    short = np.flatnonzero(counts < k)
    if short.size:  # argpartition would fill these rows with non-candidates
        raise TooFewCandidates(k, short, counts[short])
    if tiebreak is not None:
        key += 1e-9 * np.nan_to_num(tiebreak, nan=0.0)
    key[np.isneginf(key)] = np.finfo(np.float64).min  # a candidate still beats every non-candidate
    key[out] = -np.inf
    part = np.argpartition(-key, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(key, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def sweep(rule: str, eng: np.ndarray, req: np.ndarray, candidates: np.ndarray,
          ws: list[float], k: int) -> np.ndarray:
    """Top-k for every w: array of shape (len(ws), users, k)."""
    e, r = normalise(rule, eng, req, candidates)
    tiebreak = rank01(eng, candidates)
    return np.stack([top_k(combine(rule, e, r, w), k, tiebreak) for w in ws])


def _lookup(rule: str):
    try:
        return _RULES[rule]
    except KeyError:
        raise ValueError(f"unknown aggregation {rule!r}; allowed: {', '.join(RULES)}") from None
