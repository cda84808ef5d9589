"""Everything a finished run writes into results/<suite>/<run-id>/."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from ctrlrec import hardware

from .methods import METHODS
from .plan import sweep_context
from .report import plots, provenance, render, sections, statistics, tables
from .report import seeds as by_seed
from .report.sources import pool_sources
from .seeds import repeated_stages, seed_steps, split_label
from .stages.data import split_of


def write_run(run_dir: Path, suite, plan, result, run_info: dict, elapsed: float) -> None:
    per_user, recs = per_user_metrics(suite, plan, result)
    per_user.to_parquet(run_dir / "per_user.parquet", index=False)  # lets `bench report` rebuild
    cells = tables.cells_table(per_user, suite.config_hash())
    cells.to_parquet(run_dir / "cells.parquet", index=False)
    cells.to_csv(run_dir / "cells.csv", index=False)
    tables.recommendations_table(recs, suite.ws(), suite.k).to_parquet(
        run_dir / "recommendations.parquet", index=False)
    pd.concat([outputs["requests"]["requests"].assign(seed=seed) for seed, outputs in
               seed_outputs(suite, plan, result)], ignore_index=True).to_parquet(
        run_dir / "requests.parquet", index=False)
    manifest = build_manifest(run_dir, suite, plan, result, per_user, run_info, elapsed)
    checks = [outputs["student"]["check"].assign(seed=seed)
              for seed, outputs in seed_outputs(suite, plan, result) if "student" in outputs]
    check = None
    if checks:
        check = pd.concat(checks, ignore_index=True)
        check.to_parquet(run_dir / "distill_check.parquet", index=False)
    write_reports(run_dir, manifest, cells, per_user, check)
    provenance.write_json(run_dir / "manifest.json", manifest)


def seed_outputs(suite, plan, result):
    """(seed, {label without the seed: artefacts}) for every seed of the run, in suite order."""
    for seed in suite.seeds:
        yield seed, {base: result.outputs[s.label] for base, s in seed_steps(plan, seed).items()
                     if s.label in result.outputs}


def write_reports(run_dir: Path, manifest: dict, cells: pd.DataFrame,
                  per_user: pd.DataFrame | None, check: pd.DataFrame | None = None,
                  unit: str | None = None) -> None:
    """Tables, plots, summary.md and report.html from a run's cells, per-user metrics and
    manifest. Without per-user data (older run folders) Table 1 is read from table1.csv and the
    paired comparison is left out. `unit`: resample this unit instead of the suite's. With
    several seeds (a `seed` column) every table is computed per seed, saved so, and summarised
    over seeds in the report (bench/report/seeds.py); the figures show the mean over seeds."""
    if check is not None:  # the first seed's student
        plots.plot_distillation(next(by_seed.each_seed(check))[1], run_dir / "distill.png")
    kind = (manifest.get("pool") or {}).get("kind", "all")  # older folders: one pool, unlabelled
    cells = statistics.with_pool(cells, kind)
    sat = tables.satisfaction_metric(cells)
    sat_ks = sorted(cells[cells.metric == sat].k.unique())
    pairs = sources = None
    hows: dict = {}
    if per_user is not None:
        per_user = statistics.with_pool(per_user, kind)
        hows = {seed: resampling(run_dir, manifest, unit, seed)
                for seed in by_seed.seeds_of(per_user)}
        t1 = by_seed.per_seed(lambda pu, seed: pd.concat(
            [statistics.table1(pu, sat, k, how=hows[seed]) for k in sat_ks], ignore_index=True),
            per_user)
        t1.to_csv(run_dir / "table1.csv", index=False)
        pairs = by_seed.per_seed(lambda pu, seed: pd.concat(
            [statistics.paired_comparisons(pu, sat, k, hows[seed]) for k in sat_ks],
            ignore_index=True), per_user)
        pairs.to_csv(run_dir / "paired.csv", index=False)
        sources = by_seed.per_seed(lambda pu, seed: _sources(pu, sat, sat_ks), per_user)
        if sources is not None:
            sources.to_csv(run_dir / "pool_sources.csv", index=False)
    else:
        t1 = statistics.with_pool(pd.read_csv(run_dir / "table1.csv"), kind)
    pareto = by_seed.per_seed(lambda c, seed: pd.concat(
        [statistics.pareto_summary(c, sat, k, per_user=by_seed.seed_rows(per_user, seed),
                                   how=hows.get(seed) or statistics.Resampling())
         for k in sat_ks], ignore_index=True), cells)
    pareto.to_csv(run_dir / "pareto.csv", index=False)
    first = by_seed.seeds_of(cells)[0]
    if len(by_seed.seeds_of(cells)) > 1:
        drawn, n = by_seed.seed_mean_cells(cells)
        banded, band = drawn, f"{n} seeds, band: ±1 sd over seeds"
    else:
        drawn = by_seed.seed_rows(cells, first)
        banded, band = curve_bands(drawn, by_seed.seed_rows(per_user, first), hows.get(first))
    for k in sat_ks:
        plots.plot_pareto(drawn, sat, k, run_dir / f"pareto_k{k}.png")
    plots.plot_curves(banded, run_dir / "curves.png", band)
    t1 = by_seed.over_seeds(t1, by_seed.TABLE1)
    contexts = None
    if cells.context.nunique() > 1:
        contexts = tables.context_table(t1)
        plots.plot_context(drawn, run_dir / "context.png")
    spread = by_seed.with_spread
    render.write(run_dir, sections.build(
        manifest, cells, spread(t1), spread(by_seed.over_seeds(pareto, by_seed.PARETO)),
        spread(by_seed.over_seeds(pairs, by_seed.PAIRED)), contexts, run_dir,
        sources=_drop_count(by_seed.over_seeds(sources, by_seed.SOURCES))))


def _drop_count(frame: pd.DataFrame | None) -> pd.DataFrame | None:
    """The pool table over seeds holds plain means; the run's facts name the seeds."""
    return frame.drop(columns="n_seeds") if frame is not None and "n_seeds" in frame else frame


def _sources(per_user: pd.DataFrame, sat: str, ks) -> pd.DataFrame | None:
    found = [t for t in (pool_sources(per_user, sat, k) for k in ks) if t is not None]
    return pd.concat(found, ignore_index=True) if found else None


class ReportError(ValueError):
    """A run folder that `bench report` cannot rebuild from (one line for the user)."""


def resampling(run_dir: Path, manifest: dict, unit: str | None = None,
               seed: int | None = None) -> statistics.Resampling:
    """The suite's statistics settings (manifests from before them: the defaults, and unit user
    where the folder kept no requests), `unit` overriding the unit; clusters from the run's
    requests (requests.parquet: each evaluated user's request text and genre), those of `seed`
    in a run of several seeds, whose draws it also seeds."""
    from .suite import StatisticsCfg
    suite = manifest.get("suite") or {}
    cfg = StatisticsCfg(**suite.get("statistics", {}))
    path = run_dir / "requests.parquet"
    unit = unit or (cfg.unit if path.exists() or "statistics" in suite else "user")
    if unit not in statistics.UNITS:
        raise ReportError(f"unit {unit!r}: allowed: {', '.join(statistics.UNITS)}")
    requests = None
    if unit != "user":
        if not path.exists():
            raise ReportError(f"{run_dir}: unit {unit} needs requests.parquet, which this run "
                              "folder lacks (use unit user)")
        requests = by_seed.seed_rows(pd.read_parquet(path), seed)
    try:
        clusters = statistics.cluster_labels(requests, unit)
    except ValueError as exc:
        raise ReportError(f"{run_dir}: {exc}; allowed here: request, user") from None
    return statistics.Resampling(unit, clusters, cfg.resamples, cfg.permutations,
                                 int(suite.get("seed", 0) if seed is None else seed))


def curve_bands(cells: pd.DataFrame, per_user: pd.DataFrame | None,
                how: statistics.Resampling | None) -> tuple[pd.DataFrame, str]:
    """Cells whose se is cluster-robust for the unit, and the band's caption."""
    if per_user is None:
        return cells, "band: ±1.96 se over users"
    se = statistics.cluster_se(per_user, cells.metric.unique(), how)
    keys = statistics.KEYS + ["w_control", "k", "metric"]
    cells = cells.drop(columns="se").merge(se, on=keys, how="left")
    return cells, f"band: 95% interval, clusters: {statistics.UNITS[how.unit]}"


def rebuild(run_dir: Path, unit: str | None = None) -> list[str]:
    """`bench report`: regenerate summary.md, report.html, the tables and plots of a finished
    run from its files (cells.parquet, manifest.json, per_user.parquet or table1.csv,
    distill_check.parquet, requests.parquet); `unit`: resample it instead of the suite's unit.
    Returns the names of the files written."""
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
    if unit is not None and per_user is None:
        raise ReportError(f"{run_dir}: --unit needs per_user.parquet, which this run folder lacks")
    check = None
    if (run_dir / "distill_check.parquet").exists():
        check = pd.read_parquet(run_dir / "distill_check.parquet")
    before = {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()}
    write_reports(run_dir, manifest, cells, per_user, check, unit)
    return sorted(p.name for p in run_dir.iterdir()
                  if before.get(p.name) != p.stat().st_mtime_ns)


def per_user_metrics(suite, plan, result):
    """Per-user metrics of every cell (judge grades merged in) and the top-k lists per cell, of
    every seed and labelled with it (`seed`)."""
    per_user, recs = [], []
    for seed in suite.seeds:
        steps = seed_steps(plan, seed)
        sweeps = [s for s in steps.values() if s.stage == "sweep"]
        req = result.outputs[next(d for d in sweeps[0].deps  # the requests its sweeps read
                                  if split_label(d)[0] == "requests")]["requests"]
        frames = []
        for m in suite.methods:
            for ctx in suite.contexts:  # context-free methods: one sweep serves every context
                cells: dict[tuple, list] = {}  # (aggregation, pool) -> its sweeps, in row order
                for s in sweeps:
                    cell = s.config["cell"]
                    if cell[:2] == [m.name, sweep_context(m.name, ctx)]:
                        cells.setdefault((cell[2], cell[5]), []).append(result.outputs[s.label])
                for (agg, over), outs in cells.items():
                    labels = {"method": m.name, "context": ctx, "aggregation": agg, "pool": over}
                    frames.append(pd.concat([o["per_user"] for o in outs],
                                            ignore_index=True).assign(**labels))
                    recs.append(({**labels, "seed": seed}, req.user_id.to_numpy(),
                                 np.concatenate([o["recs"] for o in outs], axis=1)))
        frame = pd.concat(frames, ignore_index=True)
        if "judge" in steps:
            judge = result.outputs[steps["judge"].label]["per_user"]
            anyctx = judge[judge.context == "*"]  # context-free methods: one judgement per context
            judge = pd.concat([judge[judge.context != "*"]] +
                              [anyctx.assign(context=c) for c in suite.contexts],
                              ignore_index=True)
            frame = frame.merge(judge, how="left", on=["method", "context", "aggregation",
                                                       "pool", "user_id", "w_control", "k"])
        per_user.append(frame.assign(seed=seed))
    return pd.concat(per_user, ignore_index=True), recs


def build_manifest(run_dir, suite, plan, result, per_user, run_info, elapsed) -> dict:
    """The run's record. With several seeds, the sections that describe one model (engagement,
    pool, judge validation, distillation) are the first seed's, with the others' `*_by_seed`."""
    sweep_seconds = sum(t.get("seconds", 0) for label, t in result.timings.items()
                        if label.startswith("sweep[") and not t["cached"])
    outs = dict(seed_outputs(suite, plan, result))
    first = outs[suite.seeds[0]]
    student = first.get("student")
    several = len(suite.seeds) > 1
    by_seed_of = (lambda fn: {"by_seed": {str(s): fn(o) for s, o in outs.items()}}  # noqa: E731
                  if several else {})
    return {
        "suite": suite.model_dump(mode="json"), "config_hash": suite.config_hash(),
        "run_id": run_dir.name, **run_info,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_commit": provenance.git_commit(), "versions": provenance.versions(),
        "git": provenance.git_state(),  # dirty runs stay off the leaderboard unless asked for
        "protocol": provenance.PROTOCOL,
        "hardware": hardware.describe(),
        # every seeded stage (bivae, requests, pool sample, distillation) ran with each of these
        "seeds": {"runs": list(suite.seeds), "per_seed_stages": repeated_stages(plan)},
        "data_source": first["dataset"]["split"]["source"],
        "split": {**first["dataset"]["split"]["meta"],
                  "train_ratings": len(first["dataset"]["train"]),
                  "test_ratings": len(first["dataset"]["test"]),
                  "evaluable_users": len(split_of(first["dataset"]).evaluable_users())},
        "n_users": int(per_user[per_user.seed == suite.seeds[0]].user_id.nunique()),
        "n_cells": len(suite.grid()),
        "engagement_metrics": first["engagement"]["metrics"],
        **{f"engagement_metrics_{k}": v
           for k, v in by_seed_of(lambda o: o["engagement"]["metrics"]).items()},
        "pool": pool_facts(suite, first["pool"]),
        "llm": {label: out["stats"] for label, out in result.outputs.items() if "stats" in out},
        "llm_pools": result.pools,
        "judge_is_scorer": judge_is_scorer(suite),
        "judge_validation": (first["judge_validation"]["separation"]
                             if "judge_validation" in first else None),
        "distillation": student["summary"] if student is not None else None,
        **({f"distillation_{k}": v for k, v in by_seed_of(
            lambda o: o["student"]["summary"]).items()} if student is not None else {}),
        "stages": {s.label: {"key": s.key, **result.timings.get(s.label, {})} for s in plan},
        "sweep_compute_seconds": round(sweep_seconds, 3),
        "wall_seconds": round(elapsed, 2),
    }


def pool_facts(suite, pool: dict) -> dict:
    """The pool's kind and size, and for a shortlist its nominators: items asked of each, items
    each nominated per user on average, and whether one ranks by an embedding model."""
    out = {"kind": suite.pool.kind, "mean_items_per_user": float(pool["pool"].sum(axis=1).mean())}
    if "nominated" in pool:
        out["nominators"] = {name: {"asked": n, "mean_nominated": float(
            ((pool["nominated"] >> pool["nominators"].index(name)) & 1).sum(axis=1).mean())}
            for name, n in suite.pool.nominators()}
        out["embedding_nominator"] = suite.pool.embedding_nominated()
    return out


def judge_is_scorer(suite) -> bool | None:
    """True when the judge model also scored items directly: the paper used different models."""
    if suite.judge is None:
        return None
    return suite.judge.llm.model in {m.llm.model for m in suite.methods
                                     if "llm" in METHODS[m.name].models}
