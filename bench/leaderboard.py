"""`bench leaderboard`: one table across every run found under a results folder."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from tabulate import tabulate


def _models(suite: dict, method: str) -> str:
    m = next((x for x in suite["methods"] if x["name"] == method), {})
    if method == "direct":
        return m.get("llm", {}).get("model", "")
    return m.get("model", "")


def collect(root: Path) -> pd.DataFrame:
    rows = []
    for t1 in sorted(root.glob("*/*/table1.csv")):
        run = t1.parent
        try:
            manifest = json.loads((run / "manifest.json").read_text())
            table = pd.read_csv(t1).rename(columns={"vs_untrained_%": "vs_untrained"})
            if "vs_untrained" not in table:
                table["vs_untrained"] = float("nan")
            pareto = pd.read_csv(run / "pareto.csv") if (run / "pareto.csv").exists() else None
        except (OSError, ValueError):
            continue  # an unfinished or foreign folder: skip it, do not fail the table
        suite = manifest["suite"]
        for r in table.itertuples(index=False):
            area = None
            if pareto is not None:
                hit = pareto[(pareto.method == r.method) & (pareto.context == r.context)
                             & (pareto.aggregation == r.aggregation) & (pareto.k == r.k)]
                area = float(hit.area_vs_precision.iloc[0]) if len(hit) else None
            rows.append({
                "suite": suite["name"], "run": run.name, "method": r.method, "context": r.context,
                "aggregation": r.aggregation, "k": r.k, "model": _models(suite, r.method),
                "engagement": suite["engagement"]["model"], "users": manifest.get("n_users"),
                "pool": suite.get("pool", {}).get("kind", "all"),
                "max_satisfaction": r.max_satisfaction,
                "ci95": f"[{r.ci_low:.3f}, {r.ci_high:.3f}]", "w": r.w_control,
                "vs_untrained_%": r.vs_untrained,
                "precision": r.precision, "frontier_area": area,
                "commit": str(manifest.get("git_commit", ""))[:10],
            })
    return pd.DataFrame(rows)


def write(root: Path, out: Path | None = None) -> str:
    df = collect(root)
    if df.empty:
        text = f"No runs with a table1.csv under {root}.\n"
    else:
        df = df.sort_values(["suite", "k", "max_satisfaction"], ascending=[True, True, False])
        text = ("# Leaderboard\n\nOne row per run × method × context × aggregation × k; "
                "satisfaction is genre accuracy@k for genre suites and the judge's grade for "
                "open-ended ones. Rebuild with `bench leaderboard`.\n\n"
                + tabulate(df, headers="keys", tablefmt="github", floatfmt=".3f",
                           showindex=False) + "\n")
    (out or root / "leaderboard.md").write_text(text)
    return text
