"""Statistics over users: Table 1 (maximum satisfaction per method with bootstrap intervals and
% vs untrained), the paired comparison of methods, and Pareto frontiers of satisfaction against
engagement with the area under each.

Intervals and tests resample clusters of users, not users: users who share a request text share
its LLM answers, so their values move together (`unit`: request text, requested genre, or user,
each user its own cluster, which treats users as independent). Both are built on scipy.stats."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

# a series of cells; `pool`: the candidates it ranked (the suite's pool, or all items for a
# method whose values cover every item in a shortlist run)
KEYS = ["method", "context", "aggregation", "pool"]
ENGAGEMENT = ("precision", "recall", "ndcg")


def with_pool(frame: pd.DataFrame, kind: str = "all") -> pd.DataFrame:
    """Frames from before the pool axis (older run folders) ranked one pool: label it."""
    return frame if "pool" in frame else frame.assign(pool=kind)


def _per_user_matrix(per_user: pd.DataFrame, metric: str, k: int) -> dict:
    """(method, context, aggregation, pool) -> DataFrame users × w of `metric` at k."""
    sub = with_pool(per_user[per_user.k == k])
    return {key: g.pivot_table(index="user_id", columns="w_control", values=metric)
            for key, g in sub.groupby(KEYS)}


# unit -> what a cluster is, for table captions (the keys are the suite's statistics.unit)
UNITS = {"request": "request text", "user": "user", "genre": "requested genre"}


def cluster_labels(requests: pd.DataFrame | None, unit: str) -> pd.Series | None:
    """user_id -> cluster label for `unit`, from a run's requests (requests.parquet); None for
    unit user (each user alone)."""
    if unit not in UNITS:
        raise ValueError(f"unit {unit!r}: allowed: {', '.join(UNITS)}")
    if unit == "user":
        return None
    column = {"request": "text", "genre": "genre"}[unit]
    labels = requests.set_index("user_id")[column]
    if labels.isna().any():
        raise ValueError(f"unit {unit}: {int(labels.isna().sum())} requests have no {column}")
    return labels


def _cluster_sums(values, users=None, clusters: pd.Series | None = None):
    """Per-cluster sums and user counts of `values` (NaN left out); one cluster per value when
    `clusters` is None, in the order of the values."""
    values = np.asarray(values, float)
    ok = ~np.isnan(values)
    if clusters is None:
        return values[ok], np.ones(int(ok.sum()))
    ids = pd.Index(users)[ok].map(clusters)
    if ids.isna().any():
        raise ValueError("users without a cluster label (requests and per-user data disagree)")
    inv, _ = pd.factorize(ids)  # clusters in order of first appearance
    return np.bincount(inv, weights=values[ok]), np.bincount(inv).astype(float)


def _ratio(sums, counts, axis=-1):
    """The mean over users of resampled clusters: users in them, not clusters, weigh equally."""
    return sums.sum(axis=axis) / counts.sum(axis=axis)


def n_clusters(users, clusters: pd.Series | None) -> int:
    return len(users) if clusters is None else int(pd.Index(users).map(clusters).nunique())


def bootstrap_ci(values: np.ndarray, n_boot: int = 2000, seed: int = 0, users=None,
                 clusters: pd.Series | None = None) -> tuple[float, float]:
    """95% percentile interval of the mean over users, resampling whole clusters (`clusters`:
    user_id -> label for the `users` the values belong to; None: each value its own cluster,
    the plain bootstrap over users). Percentile, not BCa: BCa's jackknife acceleration is noisy
    with the few clusters a genre unit gives (11), and percentile keeps unit=user identical to
    the earlier hand-written bootstrap (same draws for the same seed)."""
    sums, counts = _cluster_sums(values, users, clusters)
    if len(sums) < 2:
        return float("nan"), float("nan")
    res = stats.bootstrap((sums, counts), _ratio, paired=True, vectorized=True,
                          n_resamples=n_boot, method="percentile",
                          rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def sign_flip_p(diff: np.ndarray, n_perm: int = 10000, seed: int = 0, users=None,
                clusters: pd.Series | None = None) -> float:
    """Two-sided p-value of a paired randomisation test: under the null the two methods are
    exchangeable within each cluster, so the sign of a cluster's summed difference is a coin
    flip; the statistic is |mean difference over users|. scipy enumerates all 2^clusters flips
    when that is at most n_perm (exact), else draws n_perm and adds the +1 correction."""
    sums, _ = _cluster_sums(diff, users, clusters)
    if len(sums) == 0:
        return float("nan")
    res = stats.permutation_test((sums,), lambda s, axis=-1: np.abs(s.sum(axis=axis)),
                                 permutation_type="samples", vectorized=True,
                                 n_resamples=n_perm, alternative="greater",
                                 rng=np.random.default_rng(seed))
    return float(res.pvalue)


def best_columns(per_user: pd.DataFrame, sat: str, k: int) -> dict:
    """(method, context, aggregation, pool) -> (best w, per-user satisfaction there): the w with the
    highest mean satisfaction at k, the smallest w on ties."""
    best = {}
    for key, mat in _per_user_matrix(per_user, sat, k).items():
        means = mat.mean(axis=0)
        w = float(means[means == means.max()].index.min())
        best[key] = (w, mat[w])
    return best


@dataclass(frozen=True)
class Resampling:
    """How intervals and tests resample: the unit, its clusters (user_id -> label; None: each
    user alone), bootstrap resamples, sign-flip permutations and the seed."""
    unit: str = "user"
    clusters: pd.Series | None = field(default=None, compare=False)
    resamples: int = 2000
    permutations: int = 10000
    seed: int = 0

    def ci(self, col: pd.Series) -> tuple[float, float]:
        """The interval of the mean of a per-user Series (index: user_id)."""
        return bootstrap_ci(col.to_numpy(), self.resamples, self.seed, col.index, self.clusters)

    def p(self, col: pd.Series) -> float:
        return sign_flip_p(col.to_numpy(), self.permutations, self.seed, col.index,
                           self.clusters)

    def count(self, col: pd.Series) -> int:
        return n_clusters(col.dropna().index, self.clusters)


def paired_comparisons(per_user: pd.DataFrame, sat: str, k: int,
                       how: Resampling = Resampling()) -> pd.DataFrame:
    """Every pair of methods within a context, aggregation and pool, each at its own best w: mean
    paired difference of satisfaction over the common users, its 95% cluster-bootstrap interval
    and a cluster sign-flip p-value (`unit`, `n_clusters`: what was resampled). The best w is
    picked on the same users, so the intervals are optimistic for the noisier method."""
    best = best_columns(per_user, sat, k)
    rows = []
    groups: dict[tuple, list[str]] = {}
    for method, ctx, agg, over in best:
        groups.setdefault((ctx, agg, over), []).append(method)
    for (ctx, agg, over), methods in sorted(groups.items()):
        methods = sorted(methods)
        for i, a in enumerate(methods):
            for b in methods[i + 1:]:
                (wa, ca), (wb, cb) = best[(a, ctx, agg, over)], best[(b, ctx, agg, over)]
                common = ca.dropna().index.intersection(cb.dropna().index)
                diff = ca[common] - cb[common]
                lo, hi = how.ci(diff)
                rows.append({"context": ctx, "aggregation": agg, "pool": over, "k": k,
                             "method_a": a,
                             "w_a": wa, "method_b": b, "w_b": wb,
                             "diff": float(diff.mean()) if len(diff) else float("nan"),
                             "ci_low": lo, "ci_high": hi, "p_value": how.p(diff),
                             "n_users": len(common), "unit": how.unit,
                             "n_clusters": how.count(diff)})
    return pd.DataFrame(rows, columns=["context", "aggregation", "pool", "k", "method_a", "w_a",
                                       "method_b", "w_b", "diff", "ci_low", "ci_high", "p_value",
                                       "n_users", "unit", "n_clusters"])


def table1(per_user: pd.DataFrame, sat: str, k: int, baseline: str = "untrained",
           how: Resampling = Resampling()) -> pd.DataFrame:
    """Per method: max satisfaction over w (smallest w on ties), its 95% cluster-bootstrap
    interval, the w, % vs the baseline method's maximum (same context, aggregation and pool), the
    engagement metrics there, and a paired interval of the difference to the baseline (both at
    their own best w, over the same users); `unit`, `n_clusters`: what was resampled."""
    best = best_columns(per_user, sat, k)
    eng = {m: _per_user_matrix(per_user, m, k) for m in ENGAGEMENT}
    rows = []
    for key, (w, col) in best.items():
        base = best.get((baseline, *key[1:])) or best.get((baseline, "none", *key[2:]))
        lo, hi = how.ci(col)
        row = {**dict(zip(KEYS, key)), "k": k,
               "max_satisfaction": float(col.mean()), "ci_low": lo, "ci_high": hi,
               "w_control": w}
        if base is not None and key[0] != baseline:
            b = base[1]
            row["vs_untrained_%"] = 100 * (float(col.mean()) / float(b.mean()) - 1)
            common = col.index.intersection(b.index)
            row["diff_ci_low"], row["diff_ci_high"] = how.ci(col[common] - b[common])
        for m, mats in eng.items():  # engagement at the best w
            row[m] = float(mats[key][w].mean())
        row["unit"], row["n_clusters"] = how.unit, how.count(col)
        rows.append(row)
    return pd.DataFrame(rows).sort_values(  # the shortlist rows before the all-items ones
        ["context", "aggregation", "pool", "method"], ascending=[True, True, False, True],
        ignore_index=True)


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
    return with_pool(cells).pivot_table(index=KEYS + ["w_control"], columns="metric",
                             values="mean").reset_index().dropna(subset=[sat])


def area_cis(sat: dict, eng: dict, how: Resampling) -> dict:
    """key -> 95% cluster-bootstrap interval of its frontier area against engagement, from
    per-user matrices (users × w) per key. Each resample redraws clusters, averages both metrics
    per w over their users for every key, and rescales engagement by that resample's best value
    over the run, as the point estimate does, so an area stays within [0, 1]."""
    keys = list(sat)
    ws = {key: sat[key].columns[sat[key].notna().any(axis=0)] for key in keys}  # judge: few w
    users = None
    for key in keys:
        ok = sat[key].index[sat[key][ws[key]].notna().all(axis=1)].intersection(
            eng[key].index[eng[key][ws[key]].notna().all(axis=1)])
        users = ok if users is None else users.intersection(ok)
    labels = users if how.clusters is None else users.map(how.clusters)
    sums = {key: (sat[key].loc[users, ws[key]].groupby(labels).sum().to_numpy(),
                  eng[key].loc[users, ws[key]].groupby(labels).sum().to_numpy()) for key in keys}
    n = pd.Series(1.0, index=users).groupby(labels).sum().to_numpy()
    if len(n) < 2:
        return {key: (float("nan"), float("nan")) for key in keys}

    def areas(idx, axis=-1):  # idx: resampled cluster indices, one row per resample
        flat = np.asarray(idx, int).reshape(-1, idx.shape[-1])
        out = np.empty((len(keys), len(flat)))
        for j, r in enumerate(flat):
            means = [(s[r].sum(0) / n[r].sum(), e[r].sum(0) / n[r].sum())
                     for s, e in sums.values()]
            x_max = max(float(e.max()) for _, e in means)
            out[:, j] = [front_area(e, s, x_max) for s, e in means]
        return out.reshape(len(keys), *idx.shape[:-1])
    res = stats.bootstrap((np.arange(len(n)),), areas, vectorized=True,
                          n_resamples=how.resamples, method="percentile",
                          rng=np.random.default_rng(how.seed))
    ci = res.confidence_interval
    return {key: (float(ci.low[i]), float(ci.high[i])) for i, key in enumerate(keys)}


def pareto_summary(cells: pd.DataFrame, sat: str, k: int, engagement: tuple = ENGAGEMENT,
                   per_user: pd.DataFrame | None = None,
                   how: Resampling = Resampling()) -> pd.DataFrame:
    """Per method, context and aggregation at k: the area under its frontier of satisfaction
    against each engagement metric, engagement scaled by its best value over the run; with
    per-user data also a 95% cluster-bootstrap interval of the area against precision."""
    wide = frontier_points(cells[cells.k == k], sat)
    cis = {}
    if per_user is not None and "precision" in engagement:
        cis = area_cis(_per_user_matrix(per_user, sat, k),
                       _per_user_matrix(per_user, "precision", k), how)
    rows = []
    for key, g in wide.groupby(KEYS):
        row = {**dict(zip(KEYS, key)), "k": k}
        for m in engagement:
            row[f"area_vs_{m}"] = front_area(g[m].to_numpy(), g[sat].to_numpy(),
                                             float(wide[m].max()))
        if key in cis:
            row["area_ci_low"], row["area_ci_high"] = cis[key]
            row["unit"] = how.unit
        rows.append(row)
    return pd.DataFrame(rows)


def cluster_se(per_user: pd.DataFrame, metrics, how: Resampling) -> pd.DataFrame:
    """Cluster-robust standard error of every cell's mean over users (one row per cell and metric,
    as cells.parquet), for the bands of the curves: sqrt(C/(C-1) · Σ_c (S_c − mean·n_c)²) / N over
    C clusters with sums S_c of n_c users; with one user per cluster it is the usual se."""
    keys = KEYS + ["w_control", "k"]
    df = with_pool(per_user)
    df = df.assign(_cluster=df.user_id if how.clusters is None else df.user_id.map(how.clusters))
    out = []
    for m in [m for m in metrics if m in df]:
        g = df.dropna(subset=[m]).groupby(keys + ["_cluster"])[m].agg(["sum", "count"])
        total = g.groupby(level=keys).transform("sum")
        g["r2"] = (g["sum"] - total["sum"] / total["count"] * g["count"]) ** 2
        a = g.groupby(level=keys).agg(r2=("r2", "sum"), c=("r2", "size"), n=("count", "sum"))
        se = np.sqrt(a.c / (a.c - 1).where(a.c > 1) * a.r2) / a.n
        out.append(se.rename("se").reset_index().assign(metric=m))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=keys + ["se"])
