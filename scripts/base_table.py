#!/usr/bin/env python
"""How much control CTRL-Rec adds on top of each base recommender: one row per run of a suite
(e.g. suites/genre_bases.yaml run once per engagement model), with the base recommender's own
P@k (w_control = 0: engagement alone), the best satisfaction over w and the area under the
satisfaction-vs-precision frontier, from the run folders' leaderboard rows and cells.csv. The
run's own frontier area scales precision by that run's best; `area (common)` scales every run by
the best precision among the runs shown, so the areas compare across base recommenders.

    .venv/bin/python scripts/base_table.py results [--suite genre_bases] [--k 5]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd
from tabulate import tabulate

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.leaderboard import collect  # noqa: E402
from bench.report.statistics import front_area  # noqa: E402


def _settings(engagement: dict) -> dict:
    """A cornac model's params; bivae's flat keys; nothing for popularity (it has none)."""
    if "params" in engagement:
        return engagement["params"]
    return {} if engagement["model"] == "popularity" else \
        {k: v for k, v in engagement.items() if k != "model"}


def base_rows(root: Path, suite: str, k: int) -> pd.DataFrame:
    board = collect(root)
    if not board.empty:
        board = board[(board.suite == suite) & (board.k == k)]
    if board.empty:
        return board
    rows, curves = [], []
    for r in board.itertuples(index=False):
        run = root / suite / r.run
        cells = pd.read_csv(run / "cells.csv")
        cells = cells[(cells.method == r.method) & (cells.context == r.context)
                      & (cells.aggregation == r.aggregation) & (cells.k == k)]
        wide = cells.pivot_table(index="w_control", columns="metric", values="mean")
        curves.append((wide["precision"].to_numpy(), wide[r.metric].to_numpy()))
        engagement = json.loads((run / "manifest.json").read_text())["suite"]["engagement"]
        rows.append({
            "run": r.run, "engagement": r.engagement,
            "params": json.dumps(_settings(engagement), separators=(",", ":")),
            "method": r.method, f"P@{k} at w=0": wide["precision"].get(0.0),
            f"max {r.metric}@{k}": r.max_satisfaction, "at w": r.w, "ci95": r.ci95,
            "frontier area": r.frontier_area})
    best = max(float(x.max()) for x, _ in curves)
    for row, (x, y) in zip(rows, curves):
        row["area (common)"] = front_area(x, y, best)
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path, help="a results folder: <root>/<suite>/<run-id>/")
    ap.add_argument("--suite", default="genre_bases")
    ap.add_argument("--k", type=int, default=5)
    args = ap.parse_args(argv)
    df = base_rows(args.root, args.suite, args.k)
    if df.empty:
        print(f"no finished runs of {args.suite} under {args.root}", file=sys.stderr)
        return 1
    print(tabulate(df, headers="keys", tablefmt="github", floatfmt=".3f", showindex=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
