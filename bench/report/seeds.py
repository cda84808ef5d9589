"""Tables of a run with several seeds. Each seed's tables are computed exactly as a single run's
(bench/report/statistics.py), on that seed's users and requests; a summary row per method then
gives the mean over seeds of every number, the sample sd over seeds of the headline ones
(`<column>_sd`), and the bootstrap interval and p-value of the first seed listed in the suite.
An interval is a statement about one seed's users and requests: averaging bounds over seeds
would describe no resampling at all, so the first seed's interval stands beside the across-seed
sd, which measures what the seed moves (engagement model, requests, pool sample, student)."""

from __future__ import annotations

import pandas as pd

from .statistics import KEYS

# per table: the row keys, the columns whose spread over seeds is reported, and the columns taken
# from the first seed (intervals, tests and their descriptions)
TABLE1 = (KEYS + ["k"], ["max_satisfaction", "w_control", "vs_untrained_%", "precision",
                         "recall", "ndcg"],
          ["ci_low", "ci_high", "diff_ci_low", "diff_ci_high", "unit", "n_clusters"])
PARETO = (KEYS + ["k"], ["area_vs_precision", "area_vs_recall", "area_vs_ndcg"],
          ["area_ci_low", "area_ci_high", "unit"])
PAIRED = (["context", "aggregation", "pool", "k", "method_a", "method_b"], ["diff", "w_a", "w_b"],
          ["ci_low", "ci_high", "p_value", "n_users", "unit", "n_clusters"])
SOURCES = (["method", "context", "aggregation", "k"], [], [])


def seeds_of(frame: pd.DataFrame) -> list:
    """The seeds of a frame in the order they were run; [None] for a frame without seeds (run
    folders from before seeds, constructed data)."""
    return list(dict.fromkeys(frame["seed"])) if "seed" in frame and len(frame) else [None]


def seed_rows(frame: pd.DataFrame | None, seed) -> pd.DataFrame | None:
    """The frame's rows of one seed without the seed column (seed None: the frame)."""
    if frame is None or seed is None or "seed" not in frame:
        return frame
    return frame[frame["seed"] == seed].drop(columns="seed").reset_index(drop=True)


def each_seed(frame: pd.DataFrame):
    """(seed, the frame's rows of that seed without the seed column), in run order."""
    for seed in seeds_of(frame):
        yield seed, seed_rows(frame, seed)


def per_seed(fn, frame: pd.DataFrame, *args, **kwargs) -> pd.DataFrame | None:
    """fn(rows of one seed, seed, *args) for every seed, stacked with a `seed` column (none
    without seeds); None when fn gives None for every seed."""
    parts = []
    for seed, rows in each_seed(frame):
        out = fn(rows, seed, *args, **kwargs)
        if out is not None:
            parts.append(out if seed is None else out.assign(seed=seed))
    return pd.concat(parts, ignore_index=True) if parts else None


def over_seeds(frame: pd.DataFrame | None, spec: tuple) -> pd.DataFrame | None:
    """One row per key from one row per key and seed: the mean over seeds of every numeric
    column, `<column>_sd` (sample sd) for the spread columns, the first seed's values of the
    first-seed columns, and `n_seeds`. A frame of one seed comes back as it is, less its seed
    column, so a single-seed report reads as before."""
    if frame is None or "seed" not in frame:
        return frame
    if frame["seed"].nunique() < 2:
        return frame.drop(columns="seed")
    keys, spread, from_first = spec
    first = [c for c in frame.columns if c not in keys and c != "seed"
             and (c in from_first or not pd.api.types.is_numeric_dtype(frame[c]))]
    groups = frame.groupby(keys, sort=False, dropna=False)
    out = groups[[c for c in frame.columns if c not in keys + first + ["seed"]]].mean()
    for c in [c for c in spread if c in frame]:
        out[f"{c}_sd"] = groups[c].std(ddof=1)
    # the first seed's row as it is: GroupBy.first() skips NaN, so a first-seed interval left NaN
    # (fewer than 2 clusters) would show the next seed's under the first seed's name
    out = out.join(groups[first].agg(lambda s: s.iloc[0])) if first else out
    out["n_seeds"] = groups["seed"].nunique()
    order = [c for c in frame.columns if c in out.columns]  # the per-seed column order
    return out[order + [c for c in out.columns if c not in order]].reset_index()


def with_spread(frame: pd.DataFrame | None, digits: int = 3) -> pd.DataFrame | None:
    """For display: each column with an `_sd` column becomes 'mean ± sd' text."""
    if frame is None:
        return None
    frame = frame.copy()
    for sd in [c for c in frame.columns if c.endswith("_sd")]:
        col = sd[:-3]
        frame[col] = [f"{m:.{digits}f} ± {s:.{digits}f}" if pd.notna(m) else "–"
                      for m, s in zip(frame[col], frame[sd])]
        frame = frame.drop(columns=sd)
    return frame


def seed_mean_cells(cells: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Cells averaged over seeds for the figures, with `se` set so that a band of ±1.96 se is
    ±1 sd over seeds; and the number of seeds."""
    keys = [c for c in KEYS + ["w_control", "k", "metric"] if c in cells]
    g = cells.groupby(keys, sort=True, dropna=False)["mean"]
    out = g.mean().rename("mean").to_frame()
    out["se"] = g.std(ddof=1) / 1.96
    return out.reset_index(), int(cells["seed"].nunique())


def first_seed_caption(frame: pd.DataFrame | None) -> str:
    """'' for a single-seed table; else the words that say what its columns mean."""
    if frame is None or "n_seeds" not in frame:
        return ""
    return (f"Mean ± sd over {int(frame.n_seeds.max())} seeds, each seed at its own best w; "
            "intervals and p-values: the first seed's (first in `seeds`). ")
