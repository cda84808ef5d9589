"""The run's plain tables: one row per cell and metric, the top-k lists, metric names, the
context comparison and the cells at selected w."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ctrlrec.metrics import mean_se

METRICS = ("genre_accuracy", "judge", "precision", "recall", "ndcg")
SELECTED_W = (0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 1.0)


def satisfaction_metric(cells: pd.DataFrame) -> str:
    """Genre accuracy for genre requests; the judge's grade otherwise."""
    return "genre_accuracy" if "genre_accuracy" in set(cells.metric) else "judge"


def metric_label(metric: str, k) -> str:
    return {"genre_accuracy": f"genre accuracy@{k} (share of top-{k} in the genre)",
            "judge": f"judge@{k} (LLM grade of the top-{k}, 0–1)",
            "precision": f"precision@{k}", "recall": f"recall@{k}",
            "ndcg": f"NDCG@{k}"}.get(metric, f"{metric}@{k}")


def context_free(method: str) -> bool:
    """Methods whose values ignore the user context (one value matrix serves every context)."""
    from ..methods import METHODS
    return method in METHODS and not METHODS[method].uses_context


def cells_table(per_user: pd.DataFrame, config_hash: str) -> pd.DataFrame:
    """One row per cell (method × context × aggregation × pool × w × k, and seed where the run
    has seeds) and metric: mean, se, n_users."""
    from .statistics import with_pool

    per_user = with_pool(per_user)
    keys = ["method", "context", "aggregation", "pool", "w_control", "k"]
    keys += ["seed"] if "seed" in per_user else []
    rows = []
    for cell, g in per_user.groupby(keys, sort=True):
        for m in METRICS:
            if m not in g:
                continue
            values = g[m].dropna().to_numpy()  # e.g. judge grades that failed the mass check
            if len(values) == 0:
                continue
            mean, se = mean_se(values)
            rows.append({**dict(zip(keys, cell)), "metric": m, "mean": mean, "se": se,
                         "n_users": len(values), "config_hash": config_hash})
    return pd.DataFrame(rows)


def recommendations_table(recs: list[tuple[dict, np.ndarray, np.ndarray]], ws,
                          ks) -> pd.DataFrame:
    """recs: (cell labels, user ids, item ids of shape (w, users, kmax)) -> one row per user and cell."""
    frames = []
    for labels, users, items in recs:
        for wi, w in enumerate(ws):
            for k in sorted(ks):
                frames.append(pd.DataFrame({**labels, "user_id": users, "w_control": w, "k": k,
                                            "items": list(items[wi][:, :k])}))
    return pd.concat(frames, ignore_index=True)


def selected_w(cells: pd.DataFrame) -> pd.DataFrame:
    """Mean of every metric per cell at the round values of w the run has (one column per
    metric), for a table short enough to read; with several seeds, mean ± sd over seeds."""
    from .seeds import each_seed, over_seeds, seeds_of, with_spread
    from .statistics import with_pool

    if len(seeds_of(cells)) > 1:
        per = pd.concat([selected_w(c).assign(seed=s) for s, c in each_seed(cells)],
                        ignore_index=True)
        keys = ["method", "context", "aggregation", "pool", "k", "w_control"]
        return with_spread(over_seeds(per, (keys, list(METRICS), []))).drop(columns="n_seeds")

    keys = ["method", "context", "aggregation", "pool", "k", "w_control"]
    wide = with_pool(cells).pivot_table(index=keys, columns="metric",
                                        values="mean").reset_index()
    pick = [w for w in SELECTED_W if w in set(wide.w_control)]
    return wide[wide.w_control.isin(pick)][
        [*keys,
         *[m for m in METRICS if m in wide]]]


def context_table(t1: pd.DataFrame) -> pd.DataFrame:
    """Best satisfaction (and its w) per method × context, one row per method, aggregation, pool
    and k, from Table 1."""
    from .statistics import with_pool

    rows, t1 = [], with_pool(t1)
    for (method, agg, over, k), g in t1.groupby(["method", "aggregation", "pool", "k"], sort=True):
        row = {"method": method, "aggregation": agg, "k": int(k)}
        if t1.pool.nunique() > 1:  # the column only where it tells rows apart
            row["pool"] = over
        for r in g.itertuples(index=False):
            sd = getattr(r, "max_satisfaction_sd", None)  # several seeds: mean ± sd, the first
            spread, w = ("", f"{r.w_control:g}") if sd is None else (  # seed's interval, mean w
                f" ± {sd:.3f}", f"{r.w_control:.3g}")
            row[f"{r.context}"] = (f"{r.max_satisfaction:.3f}{spread} [{r.ci_low:.3f}, "
                                   f"{r.ci_high:.3f}] at w={w}")
        rows.append(row)
    return pd.DataFrame(rows)
