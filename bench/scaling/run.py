"""`bench scale SUITE --workers 1,2`: the suite run cold once per LLM worker count.

Each count gets its own `bench run` process with fresh, temporary stage and LLM answer caches
(nothing shared between counts; datasets and model files still come from the normal cache) and
`workers`/`threads` set in every LLM section the suite uses. What each run measured is read
from its manifest: wall time per stage, the LLM pools' per-worker load time, prompts and busy
seconds, and the coordinating stages' own seconds."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from .report import llm_seconds


class ScaleError(ValueError):
    """Bad arguments for `bench scale` / `bench project` (one line for the user)."""


def parse_counts(text: str, flag: str = "--workers") -> list[int]:
    try:
        counts = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ScaleError(f"{flag} {text!r}: expected whole numbers separated by commas, "
                         "e.g. 1,2,4") from None
    if not counts or min(counts) < 1 or len(set(counts)) != len(counts):
        raise ScaleError(f"{flag} {text!r}: expected distinct whole numbers of at least 1, "
                         "e.g. 1,2,4")
    return sorted(counts)


def llm_sections(suite) -> list[str]:
    """Dotted paths (as `--set` takes them) of the LLM sections that the suite's steps use."""
    from ..methods import METHODS

    paths = ["data.items.llm"] if suite.data.items.text == "summary" else []
    if suite.requests.generator == "llm":
        paths.append("requests.llm")
    for i, m in enumerate(suite.methods):
        models = METHODS[m.name].models
        paths += [f"methods.{i}.llm"] if "llm" in models else []
        paths += [f"methods.{i}.distill.teacher"] if "teacher" in models else []
    if suite.judge is not None:
        paths.append("judge.llm")
    return paths


def model_bytes(model: str) -> int | None:
    """Bytes of the weight files of a local or packaged model (None for a hub id or server)."""
    from ctrlrec.llm.models import PACKAGED_LLMS, resolve_llm

    if model not in PACKAGED_LLMS and not Path(model).expanduser().exists():
        return None
    folder = Path(resolve_llm(model))
    files = [f for ext in ("*.safetensors", "*.bin") for f in folder.glob(ext)]
    return sum(f.stat().st_size for f in files) or None


def critical_path(stages: dict, deps: dict) -> float:
    """The longest chain of stage wall times through the plan's dependencies."""
    end: dict[str, float] = {}
    for label, before in deps.items():  # plan order: dependencies come first
        end[label] = max((end[d] for d in before), default=0.0) + \
            (stages.get(label, {}).get("wall_seconds") or 0.0)
    return max(end.values(), default=0.0)


def record(workers: int, threads: int, folder: Path, seconds: float, deps: dict) -> dict:
    """What one run measured, from its manifest."""
    m = json.loads((folder / "manifest.json").read_text())
    llm_steps = {label for p in m.get("llm_pools") or [] for label in p.get("steps", [])}
    stages = {}
    for label, t in m["stages"].items():
        stats = (m.get("llm") or {}).get(label) or {}
        stages[label] = {"wall_seconds": t.get("wall_seconds"), "seconds": t.get("seconds"),
                         "started_s": t.get("started_s"),
                         "cached": t.get("cached"), "llm": label in llm_steps,
                         "prompts": stats.get("llm_calls"), "own_seconds": stats.get("own_seconds")}
    pools = [{**p, "model_bytes": model_bytes(p["model"])} for p in m.get("llm_pools") or []]
    return {"workers": workers, "threads": threads, "process_seconds": round(seconds, 2),
            "run_seconds": m["wall_seconds"], "critical_path_seconds": round(
                critical_path(stages, deps), 3),
            "stages": stages, "pools": pools, "llm": m.get("llm") or {},
            "n_users": m.get("n_users"), "pool": m.get("pool"), "ray": m.get("ray"),
            "hardware": m.get("hardware"), "git_commit": m.get("git_commit")}


def _eta(done: list[dict], remaining: list[int]) -> str:
    """Remaining time, if every later run takes the first run's non-LLM time plus its LLM-stage
    time shrunk by the worker ratio."""
    if not done:
        return "ETA after the first run"
    first = done[0]
    llm = llm_seconds(first)
    rest = first["process_seconds"] - llm
    left = sum(rest + llm * first["workers"] / n for n in remaining)
    return f"ETA {left / 60:.1f} min"


def scale(args) -> int:
    from ctrlrec import hardware

    from ..plan import build_plan, n_evaluated
    from ..report.provenance import git_commit, versions
    from ..suitefile import load_suite
    from .report import default_out, write

    counts = parse_counts(args.workers)
    if args.threads < 1:
        raise ScaleError(f"--threads {args.threads}: must be at least 1")
    suite = load_suite(args.suite, args.overrides)
    sections = llm_sections(suite)
    if not sections:
        raise ScaleError(f"{args.suite}: no LLM stage to scale (the suite uses no LLM)")
    plan = build_plan(suite, n_evaluated(suite))
    deps = {s.label: list(s.deps) for s in plan}
    # the same Ray CPUs for every count: the largest pool plus one, so that a CPU stage (a sweep
    # between two LLM stages) never has to stop a pool, and runs differ in LLM workers only
    ray_cpus = max(os.cpu_count() or 1, max(counts) * args.threads + 1)
    out = Path(args.out) if args.out else default_out(suite.name)
    env = {k: v for k, v in os.environ.items() if k != "CTRLREC_LLM_CACHE"}
    env.setdefault("RAY_AUTH_MODE", "disabled")
    runs: list[dict] = []
    for i, n in enumerate(counts):
        sets = [f"{p}.{k}={v}" for p in sections for k, v in (("workers", n),
                                                              ("threads", args.threads))]
        print(f"scale {i + 1}/{len(counts)}: {n} LLM worker(s) × {args.threads} thread(s), cold "
              f"({_eta(runs, counts[i:])})", flush=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"ctrlrec-scale-w{n}-"))
        cmd = [sys.executable, "-m", "bench.cli", "run", str(args.suite),
               *[f"--set={o}" for o in [*args.overrides, *sets]],
               "--cache-dir", str(tmp / "stages"), "--out", str(tmp / "out"), "--run-id", f"w{n}"]
        cmd += ["--address", args.address] if args.address else ["--workers", str(ray_cpus)]
        t0 = time.perf_counter()
        try:
            with open(tmp / "run.log", "w") as log:  # the run's summary; its progress: stderr
                p = subprocess.run(cmd, stdout=log, env=env, check=False)
            seconds = time.perf_counter() - t0
            if p.returncode != 0:
                tail = (tmp / "run.log").read_text()[-2000:]
                print(f"error: the run with {n} worker(s) failed (exit {p.returncode}): "
                      f"{shlex.join(cmd)}\n{tail}", file=sys.stderr)
                return p.returncode
            folder = tmp / "out" / suite.name / f"w{n}"
            runs.append(record(n, args.threads, folder, seconds, deps))
            keep = out / "runs" / f"w{n}"  # the run's results and manifest; its caches go
            shutil.rmtree(keep, ignore_errors=True)
            keep.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(folder, keep)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        llm = llm_seconds(runs[-1])
        print(f"scale {i + 1}/{len(counts)}: {n} worker(s): {seconds:.0f} s in all, LLM stages "
              f"{llm:.0f} s", flush=True)
    info = {"suite": suite.model_dump(mode="json"), "suite_file": str(args.suite),
            "overrides": args.overrides, "llm_sections": sections, "workers": counts,
            "threads": args.threads, "address": args.address or "local", "ray_cpus": ray_cpus,
            "command": "bench " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
            "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
            "git_commit": git_commit(), "versions": versions(),
            "machine": {**hardware.describe(), "cpu_count": os.cpu_count()},
            "deps": deps, "runs": runs,
            # the embedding model of each step that has one (a projection scales by its size)
            "stage_models": {s.label: s.config["model"] for s in plan
                             if isinstance(s.config.get("model"), str)}}
    print(write(info, out))
    print(f"\nwritten: {out}/ (table.md, scaling.csv, scaling.png, scaling.json; each run's "
          f"results in runs/w<N>/)")
    return 0
