"""Statistics over users: Table 1 (maximum satisfaction per method with bootstrap intervals and
% vs untrained), the paired comparison of methods, and Pareto frontiers of satisfaction against
engagement with the area under each."""

from __future__ import annotations

import numpy as np
import pandas as pd

KEYS = ["method", "context", "aggregation"]
ENGAGEMENT = ("precision", "recall", "ndcg")


def _per_user_matrix(per_user: pd.DataFrame, metric: str, k: int) -> dict:
    """(method, context, aggregation) -> DataFrame users × w of `metric` at k."""
    sub = per_user[per_user.k == k]
    return {key: g.pivot_table(index="user_id", columns="w_control", values=metric)
            for key, g in sub.groupby(KEYS)}


def bootstrap_ci(values: np.ndarray, n_boot: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of the mean over users."""
    values = np.asarray(values, float)
    values = values[~np.isnan(values)]
    if len(values) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (n_boot, len(values)))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def best_columns(per_user: pd.DataFrame, sat: str, k: int) -> dict:
    """(method, context, aggregation) -> (best w, per-user satisfaction there): the w with the
    highest mean satisfaction at k, the smallest w on ties."""
    best = {}
    for key, mat in _per_user_matrix(per_user, sat, k).items():
        means = mat.mean(axis=0)
        w = float(means[means == means.max()].index.min())
        best[key] = (w, mat[w])
    return best


def sign_flip_p(diff: np.ndarray, n_perm: int = 10000, seed: int = 0) -> float:
    """Two-sided p-value of a paired randomisation test: under the null each user's difference
    is equally likely to have either sign, so flip signs at random and count means at least as
    far from 0 as the observed one (with the +1 correction, never exactly 0)."""
    diff = np.asarray(diff, float)
    diff = diff[~np.isnan(diff)]
    if len(diff) == 0:
        return float("nan")
    observed = abs(diff.mean())
    if observed == 0:
        return 1.0
    rng = np.random.default_rng(seed)
    signs = rng.choice(np.array([-1.0, 1.0]), size=(n_perm, len(diff)))
    extreme = (np.abs((signs * diff).mean(axis=1)) >= observed - 1e-12).sum()
    return float((extreme + 1) / (n_perm + 1))


def paired_comparisons(per_user: pd.DataFrame, sat: str, k: int, n_boot: int = 1000,
                       seed: int = 0) -> pd.DataFrame:
    """Every pair of methods within a context and aggregation, each at its own best w: mean
    paired difference of satisfaction over the common users, its 95% bootstrap interval and a
    sign-flip p-value. The best w is picked on the same users, so the intervals are optimistic
    for the method whose curve is noisier."""
    best = best_columns(per_user, sat, k)
    rows = []
    groups: dict[tuple, list[str]] = {}
    for method, ctx, agg in best:
        groups.setdefault((ctx, agg), []).append(method)
    for (ctx, agg), methods in sorted(groups.items()):
        methods = sorted(methods)
        for i, a in enumerate(methods):
            for b in methods[i + 1:]:
                (wa, ca), (wb, cb) = best[(a, ctx, agg)], best[(b, ctx, agg)]
                common = ca.dropna().index.intersection(cb.dropna().index)
                diff = (ca[common] - cb[common]).to_numpy()
                lo, hi = bootstrap_ci(diff, n_boot, seed)
                rows.append({"context": ctx, "aggregation": agg, "k": k, "method_a": a,
                             "w_a": wa, "method_b": b, "w_b": wb,
                             "diff": float(diff.mean()) if len(diff) else float("nan"),
                             "ci_low": lo, "ci_high": hi, "p_value": sign_flip_p(diff, seed=seed),
                             "n_users": len(common)})
    return pd.DataFrame(rows, columns=["context", "aggregation", "k", "method_a", "w_a",
                                       "method_b", "w_b", "diff", "ci_low", "ci_high", "p_value",
                                       "n_users"])


def table1(per_user: pd.DataFrame, sat: str, k: int, baseline: str = "untrained",
           n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per method: max satisfaction over w (smallest w on ties), its 95% bootstrap interval,
    the w, % vs the baseline method's maximum (same context and aggregation), the engagement
    metrics there, and a paired bootstrap interval of the difference to the baseline (both at their
    own best w, over the same users)."""
    best = best_columns(per_user, sat, k)
    eng = {m: _per_user_matrix(per_user, m, k) for m in ENGAGEMENT}
    rows = []
    for key, (w, col) in best.items():
        base = best.get((baseline, key[1], key[2])) or best.get((baseline, "none", key[2]))
        lo, hi = bootstrap_ci(col.to_numpy(), n_boot, seed)
        row = {"method": key[0], "context": key[1], "aggregation": key[2], "k": k,
               "max_satisfaction": float(col.mean()), "ci_low": lo, "ci_high": hi,
               "w_control": w}
        if base is not None and key[0] != baseline:
            b = base[1]
            row["vs_untrained_%"] = 100 * (float(col.mean()) / float(b.mean()) - 1)
            common = col.index.intersection(b.index)
            diff = (col[common] - b[common]).to_numpy()
            row["diff_ci_low"], row["diff_ci_high"] = bootstrap_ci(diff, n_boot, seed)
        for m, mats in eng.items():  # engagement at the best w
            row[m] = float(mats[key][w].mean())
        rows.append(row)
    return pd.DataFrame(rows).sort_values(["context", "aggregation", "method"], ignore_index=True)


def pareto_front(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Indices of the non-dominated points (higher x and higher y are both better), by x."""
    order = np.lexsort((-y, -x))  # by x descending, ties by y descending
    front, best_y = [], -np.inf
    for i in order:
        if y[i] > best_y:
            front.append(i)
            best_y = y[i]
    return np.array(sorted(front, key=lambda i: x[i]))


def front_area(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Area under the staircase of the frontier, x scaled by x_max, y in [0, 1]: the share of the
    unit square that the method's trade-off dominates (1 = perfect on both axes)."""
    idx = pareto_front(x, y)
    xs, ys = x[idx] / x_max, y[idx]
    area, prev = 0.0, 0.0
    for xi, yi in zip(xs, ys):  # y of the staircase on (prev, xi] is the best y with x >= that
        area += (xi - prev) * yi
        prev = xi
    return float(area)


def frontier_points(cells: pd.DataFrame, sat: str) -> pd.DataFrame:
    """One row per method, context, aggregation and w with a column per metric: the points a
    frontier is drawn through (w values without satisfaction left out)."""
    return cells.pivot_table(index=KEYS + ["w_control"], columns="metric",
                             values="mean").reset_index().dropna(subset=[sat])


def pareto_summary(cells: pd.DataFrame, sat: str, k: int,
                   engagement: tuple = ENGAGEMENT) -> pd.DataFrame:
    """Per method, context and aggregation at k: the area under its frontier of satisfaction
    against each engagement metric, engagement scaled by its best value over the run."""
    wide = frontier_points(cells[cells.k == k], sat)
    rows = []
    for key, g in wide.groupby(KEYS):
        row = {**dict(zip(KEYS, key)), "k": k}
        for m in engagement:
            row[f"area_vs_{m}"] = front_area(g[m].to_numpy(), g[sat].to_numpy(),
                                             float(wide[m].max()))
        rows.append(row)
    return pd.DataFrame(rows)
