"""Top-k metrics as whole-array functions: every user at once, one value per user.

`topk` is users × k item column indices (best first); `relevant` is a users × items boolean matrix.
Users are averaged by the caller (see `mean_se`), so per-user values stay available for bootstraps.
"""

from __future__ import annotations

import numpy as np


def hits(topk: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """users × k booleans: is the item at each position relevant for that user."""
    return np.take_along_axis(relevant, topk, axis=1)


def precision_at_k(topk: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    return hits(topk, relevant).mean(axis=1)


def recall_at_k(topk: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    n_rel = relevant.sum(axis=1)
    found = hits(topk, relevant).sum(axis=1)
    return np.divide(found, n_rel, out=np.zeros(len(n_rel)), where=n_rel > 0)


def ndcg_at_k(topk: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """Binary-relevance NDCG: DCG over the list / DCG of an ideal list of min(k, |relevant|) hits."""
    k = topk.shape[1]
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (hits(topk, relevant) * discount).sum(axis=1)
    n_ideal = np.minimum(relevant.sum(axis=1), k)
    idcg = np.concatenate([[0.0], np.cumsum(discount)])[n_ideal]
    return np.divide(dcg, idcg, out=np.zeros(len(dcg)), where=idcg > 0)


def genre_accuracy_at_k(topk: np.ndarray, item_genres: np.ndarray, requested: np.ndarray) -> np.ndarray:
    """Fraction of each user's top-k items that carry the genre they asked for.

    item_genres: items × genres booleans; requested: one genre column index per user."""
    return item_genres[topk, requested[:, None]].mean(axis=1)


def mean_se(values: np.ndarray) -> tuple[float, float]:
    """Mean over users and its standard error (sample std / sqrt(n))."""
    values = np.asarray(values, dtype=float)
    n = len(values)
    se = float(values.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    return float(values.mean()), se
