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
from .report.provenance import hardware

RUN_FILES = ("manifest.json", "table1.csv", "cells.parquet", "summary.md",
             "recommendations.parquet")  # a folder with none of these is not a run (skip quietly)
SORT = ["suite", "metric", "k", "max_satisfaction", "method", "context", "aggregation", "run"]


def _models(suite: dict, method: str) -> str:
    m = next((x for x in suite["methods"] if x["name"] == method), {})
    entry = METHODS.get(method)
    if entry is not None and "llm" in entry.models:
        return m.get("llm", {}).get("model", "")
    return m.get("model", "")


def _run_rows(run: Path) -> list[dict]:
    """The leaderboard rows of one run folder; raises (OSError, ValueError, KeyError, ...) when
    the folder is not a readable finished run."""
    for f in ("manifest.json", "table1.csv"):
        if not (run / f).exists():
            raise FileNotFoundError(f"no {f}")
    manifest = json.loads((run / "manifest.json").read_text())
    table = pd.read_csv(run / "table1.csv").rename(columns={"vs_untrained_%": "vs_untrained"})
    if "vs_untrained" not in table:
        table["vs_untrained"] = float("nan")
    pareto = pd.read_csv(run / "pareto.csv") if (run / "pareto.csv").exists() else None
    suite = manifest["suite"]
    metric = "genre_accuracy" if suite.get("requests", {}).get("kind", "genre") == "genre" \
        else "judge"
    rows = []
    for r in table.itertuples(index=False):
        area = None
        if pareto is not None:
            hit = pareto[(pareto.method == r.method) & (pareto.context == r.context)
                         & (pareto.aggregation == r.aggregation) & (pareto.k == r.k)]
            area = float(hit.area_vs_precision.iloc[0]) if len(hit) else None
        rows.append({
            "suite": suite["name"], "run": run.name,
            "date": str(manifest.get("created_utc", ""))[:10],
            "method": r.method, "context": r.context, "aggregation": r.aggregation,
            "metric": metric, "k": int(r.k), "model": _models(suite, r.method),
            "engagement": suite["engagement"]["model"], "users": manifest.get("n_users"),
            "pool": suite.get("pool", {}).get("kind", "all"),
            "max_satisfaction": float(r.max_satisfaction),
            "ci95": f"[{r.ci_low:.3f}, {r.ci_high:.3f}]", "w": float(r.w_control),
            "vs_untrained_%": r.vs_untrained,
            "precision": r.precision, "ndcg": getattr(r, "ndcg", float("nan")),
            "frontier_area": area, "hardware": hardware(manifest),
            "commit": str(manifest.get("git_commit", ""))[:10],
        })
    return rows


def collect_all(root: Path) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """(rows of every readable run, [(folder, reason)] of the folders that were skipped)."""
    rows, skipped = [], []
    for run in sorted(p for p in Path(root).glob("*/*") if p.is_dir()
                      and not p.name.startswith(".") and any((p / f).exists() for f in RUN_FILES)):
        try:
            rows += _run_rows(run)
        except Exception as exc:  # noqa: BLE001 - any unreadable folder is reported, not fatal
            skipped.append((str(run.relative_to(root)),
                            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                            [:160]))
    df = pd.DataFrame(rows)
    if not df.empty:  # every key, so the order never depends on the file system
        df = df.sort_values(SORT, ascending=[True, True, True, False, True, True, True, True],
                            ignore_index=True)
    return df, skipped


def collect(root: Path) -> pd.DataFrame:
    return collect_all(root)[0]


def write(root: Path, out: Path | None = None) -> str:
    df, skipped = collect_all(root)
    if df.empty:
        text = f"No runs with a table1.csv under {root}.\n"
    else:
        text = ("# Leaderboard\n\nOne row per run × method × context × aggregation × k; "
                "satisfaction (`metric`) is genre accuracy@k for genre suites and the judge's "
                "grade for open-ended ones, maximised over w_control, with its 95% bootstrap "
                "interval over users; precision and NDCG@k are at that w; `frontier_area` is "
                "the area under the satisfaction-vs-precision Pareto frontier. Sorted by suite, "
                "metric, k, then satisfaction (best first). Rebuild with `bench leaderboard`.\n\n"
                + tabulate(df.astype(object).where(df.notna(), None), headers="keys",
                           tablefmt="github", floatfmt=".3f", showindex=False,
                           missingval="–") + "\n")
    if skipped:
        text += ("\n## Skipped folders\n\n" + "\n".join(f"- `{d}`: {why}" for d, why in skipped)
                 + "\n")
    (out or Path(root) / "leaderboard.md").write_text(text)
    return text
