"""Table 1 (maximum satisfaction per method with bootstrap intervals, % vs untrained, paired
comparison) and Pareto frontiers of satisfaction against engagement, from per-user metrics."""

from __future__ import annotations

import numpy as np
import pandas as pd

KEYS = ["method", "context", "aggregation"]


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


def table1(per_user: pd.DataFrame, sat: str, k: int, baseline: str = "untrained",
           n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per method: max satisfaction over w (smallest w on ties), its 95% bootstrap interval,
    the w, % vs the baseline method's maximum (same context and aggregation), the engagement
    metrics there, and a paired bootstrap interval of the difference to the baseline (both at their
    own best w, over the same users)."""
    sats = _per_user_matrix(per_user, sat, k)
    eng = {m: _per_user_matrix(per_user, m, k) for m in ("precision", "recall", "ndcg")}
    best = {}
    for key, mat in sats.items():
        means = mat.mean(axis=0)
        w = float(means[means == means.max()].index.min())
        best[key] = (w, mat[w])
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


def pareto_summary(cells: pd.DataFrame, sat: str, k: int,
                   engagement: tuple = ("precision", "recall", "ndcg")) -> pd.DataFrame:
    wide = cells[cells.k == k].pivot_table(index=KEYS + ["w_control"], columns="metric",
                                           values="mean").reset_index().dropna(subset=[sat])
    rows = []
    for key, g in wide.groupby(KEYS):
        row = {**dict(zip(KEYS, key)), "k": k}
        for m in engagement:
            row[f"area_vs_{m}"] = front_area(g[m].to_numpy(), g[sat].to_numpy(),
                                                       float(wide[m].max()))
        rows.append(row)
    return pd.DataFrame(rows)


def plot_pareto(cells: pd.DataFrame, sat: str, k: int, path, engagement=("precision", "recall",
                                                                        "ndcg")) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    wide = cells[cells.k == k].pivot_table(index=KEYS + ["w_control"], columns="metric",
                                           values="mean").reset_index().dropna(subset=[sat])
    fig, axes = plt.subplots(1, len(engagement), figsize=(5 * len(engagement), 4.2), squeeze=False)
    for ax, m in zip(axes[0], engagement):
        for n, (key, g) in enumerate(wide.groupby(KEYS)):
            x, y = g[m].to_numpy(), g[sat].to_numpy()
            color = f"C{n}"
            ax.scatter(x, y, s=10, color=color, alpha=0.25)
            idx = pareto_front(x, y)
            ax.plot(x[idx], y[idx], marker="o", ms=3, color=color, label=" / ".join(key))
        ax.set_xlabel(f"{m}@{k}")
        ax.set_ylabel(f"{sat.replace('_', ' ')}@{k}")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"Pareto frontiers: request satisfaction vs engagement (k={k}); faint: all w")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
