"""Everything a finished run writes into results/<suite>/<run-id>/."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from ctrlrec import hardware

from .report import plots, provenance, render, sections, statistics, tables
from .methods import METHODS
from .plan import sweep_context


def write_run(run_dir: Path, suite, plan, result, run_info: dict, elapsed: float) -> None:
    per_user, recs = per_user_metrics(suite, plan, result)
    per_user.to_parquet(run_dir / "per_user.parquet", index=False)  # lets `bench report` rebuild
    cells = tables.cells_table(per_user, suite.config_hash())
    cells.to_parquet(run_dir / "cells.parquet", index=False)
    cells.to_csv(run_dir / "cells.csv", index=False)
    tables.recommendations_table(recs, suite.ws(), suite.k).to_parquet(
        run_dir / "recommendations.parquet", index=False)
    result.outputs["requests"]["requests"].to_parquet(run_dir / "requests.parquet", index=False)
    manifest = build_manifest(run_dir, suite, plan, result, per_user, run_info, elapsed)
    student = result.outputs.get("student")
    check = None
    if student is not None:
        check = student["check"]
        check.to_parquet(run_dir / "distill_check.parquet", index=False)
    write_reports(run_dir, manifest, cells, per_user, check)
    provenance.write_json(run_dir / "manifest.json", manifest)


def write_reports(run_dir: Path, manifest: dict, cells: pd.DataFrame,
                  per_user: pd.DataFrame | None, check: pd.DataFrame | None = None) -> None:
    """Tables, plots, summary.md and report.html from a run's cells, per-user metrics and
    manifest. Without per-user data (older run folders) Table 1 is read from table1.csv and the
    paired comparison is left out."""
    if check is not None:
        plots.plot_distillation(check, run_dir / "distill.png")
    sat = tables.satisfaction_metric(cells)
    sat_ks = sorted(cells[cells.metric == sat].k.unique())
    pairs = None
    if per_user is not None:
        t1 = pd.concat([statistics.table1(per_user, sat, k) for k in sat_ks], ignore_index=True)
        t1.to_csv(run_dir / "table1.csv", index=False)
        pairs = pd.concat([statistics.paired_comparisons(per_user, sat, k) for k in sat_ks],
                          ignore_index=True)
        pairs.to_csv(run_dir / "paired.csv", index=False)
    else:
        t1 = pd.read_csv(run_dir / "table1.csv")
    pareto = pd.concat([statistics.pareto_summary(cells, sat, k) for k in sat_ks],
                       ignore_index=True)
    pareto.to_csv(run_dir / "pareto.csv", index=False)
    for k in sat_ks:
        plots.plot_pareto(cells, sat, k, run_dir / f"pareto_k{k}.png")
    plots.plot_curves(cells, run_dir / "curves.png")
    contexts = None
    if cells.context.nunique() > 1:
        contexts = tables.context_table(t1)
        plots.plot_context(cells, run_dir / "context.png")
    render.write(run_dir, sections.build(manifest, cells, t1, pareto, pairs, contexts, run_dir))


class ReportError(ValueError):
    """A run folder that `bench report` cannot rebuild from (one line for the user)."""


def rebuild(run_dir: Path) -> list[str]:
    """`bench report`: regenerate summary.md, report.html, the tables and plots of a finished
    run from its files (cells.parquet, manifest.json, per_user.parquet or table1.csv,
    distill_check.parquet). Returns the names of the files written."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir}: no such run folder")
    missing = [f for f in ("cells.parquet", "manifest.json") if not (run_dir / f).exists()]
    if missing:
        raise ReportError(f"{run_dir}: not a finished run folder (missing {', '.join(missing)})")
    import json
    try:
        manifest = json.loads((run_dir / "manifest.json").read_text())
        cells = pd.read_parquet(run_dir / "cells.parquet")
    except (OSError, ValueError) as exc:
        raise ReportError(f"{run_dir}: unreadable run files ({exc})") from None
    per_user = None
    if (run_dir / "per_user.parquet").exists():
        per_user = pd.read_parquet(run_dir / "per_user.parquet")
    elif not (run_dir / "table1.csv").exists():
        raise ReportError(f"{run_dir}: neither per_user.parquet nor table1.csv to build Table 1 "
                          "from (rerun the suite)")
    check = None
    if (run_dir / "distill_check.parquet").exists():
        check = pd.read_parquet(run_dir / "distill_check.parquet")
    before = {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()}
    write_reports(run_dir, manifest, cells, per_user, check)
    return sorted(p.name for p in run_dir.iterdir()
                  if before.get(p.name) != p.stat().st_mtime_ns)


def per_user_metrics(suite, plan, result):
    """Per-user metrics of every cell (judge grades merged in) and the top-k lists per cell."""
    per_user, recs = [], []
    uids = result.outputs["requests"]["requests"].user_id.to_numpy()
    for m in suite.methods:
        for ctx in suite.contexts:  # context-free methods: one sweep serves every context
            for agg in suite.aggregation:
                outs = [result.outputs[s.label] for s in plan if s.stage == "sweep"
                        and s.config["cell"][:3] == [m.name, sweep_context(m.name, ctx), agg]]
                labels = {"method": m.name, "context": ctx, "aggregation": agg}
                per_user.append(pd.concat([o["per_user"] for o in outs],
                                          ignore_index=True).assign(**labels))
                recs.append((labels, uids, np.concatenate([o["recs"] for o in outs], axis=1)))
    per_user = pd.concat(per_user, ignore_index=True)
    if "judge" in result.outputs:
        judge = result.outputs["judge"]["per_user"]
        anyctx = judge[judge.context == "*"]  # context-free methods: one judgement per context
        judge = pd.concat([judge[judge.context != "*"]] +
                          [anyctx.assign(context=c) for c in suite.contexts], ignore_index=True)
        per_user = per_user.merge(judge, how="left", on=["method", "context", "aggregation",
                                                         "user_id", "w_control", "k"])
    return per_user, recs


def build_manifest(run_dir, suite, plan, result, per_user, run_info, elapsed) -> dict:
    sweep_seconds = sum(t.get("seconds", 0) for label, t in result.timings.items()
                        if label.startswith("sweep[") and not t["cached"])
    student = result.outputs.get("student")
    return {
        "suite": suite.model_dump(mode="json"), "config_hash": suite.config_hash(),
        "run_id": run_dir.name, **run_info,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_commit": provenance.git_commit(), "versions": provenance.versions(),
        "hardware": hardware.describe(),
        "seeds": {"suite": suite.seed, "bivae": suite.seed, "requests": suite.seed},
        "data_source": result.outputs["dataset"]["split"]["source"],
        "n_users": int(per_user.user_id.nunique()), "n_cells": len(suite.grid()),
        "engagement_metrics": result.outputs["engagement"]["metrics"],
        "pool": {"kind": suite.pool.kind,
                 "mean_items_per_user": float(result.outputs["pool"]["pool"].sum(axis=1).mean())},
        "llm": {label: out["stats"] for label, out in result.outputs.items() if "stats" in out},
        "llm_pools": result.pools,
        "judge_is_scorer": judge_is_scorer(suite),
        "distillation": student["summary"] if student is not None else None,
        "stages": {s.label: {"key": s.key, **result.timings.get(s.label, {})} for s in plan},
        "sweep_compute_seconds": round(sweep_seconds, 3),
        "wall_seconds": round(elapsed, 2),
    }


def judge_is_scorer(suite) -> bool | None:
    """True when the judge model also scored items directly: the paper used different models."""
    if suite.judge is None:
        return None
    return suite.judge.llm.model in {m.llm.model for m in suite.methods
                                     if "llm" in METHODS[m.name].models}
