"""`bench leaderboard`: one table across every run found under a results folder.

A run is a folder `<root>/<suite>/<run-id>/` with manifest.json and table1.csv (pareto.csv adds
the frontier area). Folders with some run files that do not read as a finished run (unfinished,
corrupt) are skipped and named under the table with the reason, never silently dropped and never
fatal; folders with no run file at all (e.g. throughput measurements) are not runs."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from .methods import METHODS
from .report import seeds as by_seed
from .report.provenance import hardware, is_dirty
from .report.statistics import UNITS, with_pool
from .suite import PoolCfg

RUN_FILES = ("manifest.json", "table1.csv", "cells.parquet", "summary.md",
             "recommendations.parquet")  # a folder with none of these is not a run (skip quietly)
# rows are ranked (by satisfaction) only among rows that agree on everything before it: the same
# dataset, split, metric, k and candidates (a shortlist's ceiling is its own: 8 + random 8 caps
# genre accuracy near 0.47, 8 + per_category 3 near 0.93; another split has other test halves)
RANKED_WITHIN = ["suite", "dataset", "split", "metric", "k", "pool"]
SORT = RANKED_WITHIN + ["max_satisfaction", "method", "context", "aggregation", "run"]


def _judge_auc(manifest: dict, k: int) -> float | None:
    """The judge's AUC on planted feeds at k (None: not validated)."""
    rows = (manifest.get("judge_validation") or {}).get("rows", [])
    return next((r["auc"] for r in rows if r["k"] == k and r["basis"] == "all"), None)


def _clusters(row) -> str:
    """What the row's interval resampled, e.g. 'request text (39)' (older runs: users)."""
    unit = getattr(row, "unit", None)
    if not isinstance(unit, str):
        return "user"
    n = getattr(row, "n_clusters", None)
    return UNITS.get(unit, unit) + ("" if pd.isna(n) else f" ({int(n)})")


def _pool(suite: dict, over: str) -> str:
    """The candidates a row ranked: 'all', or the run's shortlist with its nominators and sizes,
    e.g. 'shortlist(engagement 8 + per_category 3)' (read as the suite reads it, so a manifest
    from before `random` existed gets the pool it ran)."""
    return PoolCfg.model_validate(suite["pool"]).describe() if over == "shortlist" else over


def _models(suite: dict, method: str) -> str:
    m = next((x for x in suite["methods"] if x["name"] == method), {})
    entry = METHODS.get(method)
    if entry is not None and "llm" in entry.models:
        return m.get("llm", {}).get("model", "")
    return m.get("model", "")


class DirtyRun(Exception):
    """A run from a tree with uncommitted changes: left out unless asked for."""


def _run_rows(run: Path, include_dirty: bool = False) -> list[dict]:
    """The leaderboard rows of one run folder; raises (OSError, ValueError, KeyError, ...) when
    the folder is not a readable finished run, DirtyRun when it is one from a dirty tree."""
    for f in ("manifest.json", "table1.csv"):
        if not (run / f).exists():
            raise FileNotFoundError(f"no {f}")
    manifest = json.loads((run / "manifest.json").read_text())
    dirty = is_dirty(manifest)
    if dirty and not include_dirty:
        n = len((manifest.get("git") or {}).get("changed", []))
        raise DirtyRun(f"commit {str(manifest.get('git_commit', 'unknown'))[:10]}"
                       + (f", {n} changed files" if n else ""))
    table = pd.read_csv(run / "table1.csv").rename(columns={"vs_untrained_%": "vs_untrained"})
    if "vs_untrained" not in table:
        table["vs_untrained"] = float("nan")
    pareto = pd.read_csv(run / "pareto.csv") if (run / "pareto.csv").exists() else None
    suite = manifest["suite"]
    metric = "genre_accuracy" if suite.get("requests", {}).get("kind", "genre") == "genre" \
        else "judge"
    kind = suite.get("pool", {}).get("kind", "all")
    first = by_seed.seeds_of(table)[0]
    table = with_pool(table, kind)  # runs from before the pool axis ranked one pool
    pareto = with_pool(pareto, kind) if pareto is not None else None
    # several seeds: one row per method, the mean over seeds, the first seed's interval
    table = by_seed.over_seeds(table, by_seed.TABLE1)
    pareto = by_seed.over_seeds(pareto, by_seed.PARETO)
    several = "n_seeds" in table
    rows = []
    for r in table.itertuples(index=False):
        area = None
        if pareto is not None:
            hit = pareto[(pareto.method == r.method) & (pareto.context == r.context)
                         & (pareto.aggregation == r.aggregation) & (pareto.pool == r.pool)
                         & (pareto.k == r.k)]
            area = float(hit.area_vs_precision.iloc[0]) if len(hit) else None
        rows.append({
            "suite": suite["name"], "run": run.name, "protocol": manifest.get("protocol", 1),
            "dataset": suite.get("data", {}).get("dataset", "ml-100k"),
            "split": suite.get("data", {}).get("split", {}).get("kind", "per_user_chronological"),
            "date": str(manifest.get("created_utc", ""))[:10],
            "method": r.method, "context": r.context, "aggregation": r.aggregation,
            "metric": metric, "k": int(r.k), "model": _models(suite, r.method),
            "engagement": suite["engagement"]["model"], "users": manifest.get("n_users"),
            "pool": _pool(suite, r.pool),
            "max_satisfaction": float(r.max_satisfaction),
            "ci95": f"[{r.ci_low:.3f}, {r.ci_high:.3f}]",
            "ci_clusters": _clusters(r) + (f", seed {first}" if several else ""),
            "seeds": int(r.n_seeds) if several else 1,
            "sd_seeds": float(r.max_satisfaction_sd) if several else None,
            "w": float(r.w_control),
            "vs_untrained_%": r.vs_untrained,
            "precision": r.precision, "ndcg": getattr(r, "ndcg", float("nan")),
            "frontier_area": area,
            "judge_auc": _judge_auc(manifest, int(r.k)) if metric == "judge" else None,
            "hardware": hardware(manifest),
            "commit": str(manifest.get("git_commit", ""))[:10] + ("-dirty" if dirty else ""),
        })
    return rows


def collect_all(root: Path, include_dirty: bool = False,
                dirty: list | None = None) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """(rows of every readable run, [(folder, reason)] of the folders that were skipped). Runs
    from a dirty tree are left out unless `include_dirty`; `dirty` collects their (folder, why)."""
    rows, skipped = [], []
    for run in sorted(p for p in Path(root).glob("*/*") if p.is_dir()
                      and not p.name.startswith(".") and any((p / f).exists() for f in RUN_FILES)):
        try:
            rows += _run_rows(run, include_dirty)
        except DirtyRun as exc:
            if dirty is not None:
                dirty.append((str(run.relative_to(root)), str(exc)))
        except Exception as exc:  # noqa: BLE001 - any unreadable folder is reported, not fatal
            skipped.append((str(run.relative_to(root)),
                            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                            [:160]))
    df = pd.DataFrame(rows)
    if not df.empty:  # every key, so the order never depends on the file system
        df = df.sort_values(SORT, ascending=[c != "max_satisfaction" for c in SORT],
                            ignore_index=True)
    return df, skipped


def collect(root: Path, include_dirty: bool = False) -> pd.DataFrame:
    return collect_all(root, include_dirty)[0]


def write(root: Path, out: Path | None = None, include_dirty: bool = False) -> str:
    dirty: list[tuple[str, str]] = []
    df, skipped = collect_all(root, include_dirty, dirty)
    if df.empty:
        text = f"No runs with a table1.csv under {root}{' from a clean tree' if dirty else ''}.\n"
    else:
        text = ("# Leaderboard\n\nOne row per run × method × context × aggregation × pool × k "
                "(`pool`: the candidates ranked, a shortlist with its nominators and their sizes; "
                "`all` rows of a shortlist run rank every item); "
                "satisfaction (`metric`) is genre accuracy@k for genre suites (on other datasets "
                "than MovieLens: the share of the top-k in the requested category) and the judge's "
                "grade for open-ended ones, maximised over w_control, with its 95% cluster-"
                "bootstrap interval (`ci_clusters`: what it resampled, and how many, e.g. request "
                "texts: users sharing one share its LLM answers); a run of several `seeds` gives "
                "the mean over seeds of every number, their sd (`sd_seeds`) and the first seed's "
                "interval; precision and NDCG@k are at that w; `frontier_area` is "
                "the area under the satisfaction-vs-precision Pareto frontier; `judge_auc` is "
                "the judge's AUC on planted fitting vs unfitting lists (below 0.8 its grades are "
                "not trusted); `protocol`: the evaluation protocol the run followed (2: neutral "
                "shortlist, judge checked, request-level intervals, code-hashed stage keys; 1: "
                "the first runs, MiniLM-nominated shortlist and user-level intervals). "
                "`split`: the train/test split (`per_user_chronological`, the paper's, or "
                "`global_time`, one cutoff in time for all users). "
                "Sorted by suite, dataset, split, metric, k and pool, then satisfaction (best "
                "first): a row is ranked only against rows over the same split and candidates, "
                "since a shortlist caps what any method can reach on it. "
                + ("Runs from a tree with uncommitted changes are included (`commit` ends in "
                   "`-dirty`). " if include_dirty else "Runs from a tree with uncommitted changes "
                   "are left out (listed below; `--include-dirty` adds them). ")
                + "Rebuild with `bench leaderboard`.\n\n"
                + tabulate(df.astype(object).where(df.notna(), None), headers="keys",
                           tablefmt="github", floatfmt=".3f", showindex=False,
                           missingval="–") + "\n")
    if dirty:
        text += (f"\n## Left out: {len(dirty)} run{'s' if len(dirty) > 1 else ''} from a dirty "
                 "tree\n\n" + "\n".join(f"- `{d}`: {why}" for d, why in dirty) + "\n")
    if skipped:
        text += ("\n## Skipped folders\n\n" + "\n".join(f"- `{d}`: {why}" for d, why in skipped)
                 + "\n")
    (out or Path(root) / "leaderboard.md").write_text(text)
    return text
