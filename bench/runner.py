"""Runs a plan on Ray: cached steps are skipped, the rest run as Ray tasks as soon as their inputs
exist, at most `workers` at a time; every finished output is cached by the driver at once, so a
failed or killed run loses nothing it finished."""

from __future__ import annotations

import atexit
import importlib
import os
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field

from .cache import StageCache
from .llmpool import LLMPools, pool_key
from .plan import Step

# An idle LLM pool is stopped after this long while other steps run: one of them may be waiting
# for the node resources it holds, which the runner cannot see (a reload costs seconds).
POOL_IDLE_SECONDS = 60.0
WORKER_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
              "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


class StageFailed(RuntimeError):
    def __init__(self, message: str, causes: list[str] = ()):
        super().__init__(message)
        self.causes = list(causes)  # the exception type name of each failed stage


@dataclass
class RunResult:
    outputs: dict = field(default_factory=dict)   # label -> artefacts (for the steps asked for)
    timings: dict = field(default_factory=dict)   # label -> {"cached": bool, "seconds": float, ...}
    pools: list = field(default_factory=list)     # each LLM pool: model, workers, per-worker stats
    started_ray: dict | None = None  # the Ray it started (start_ray's info), if it had to


def start_ray(address: str | None, workers: int | None) -> dict:
    """Join `address`, or start a quiet local instance with `workers` CPUs."""
    import ray

    if ray.is_initialized():
        return {"address": "already initialised"}
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    env = {**WORKER_ENV, **worker_env(os.environ)}
    common = dict(runtime_env={"env_vars": env}, log_to_driver=True,
                  logging_level="ERROR", configure_logging=True)
    if address:
        ctx = ray.init(address=address, **common)
    else:
        tmp = os.environ.get("RAY_TMPDIR")
        if not tmp:  # a folder of our own, removed (logs and all) when the run ends
            tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
            atexit.register(_remove_ray_tmp, tmp)
        os.environ["RAY_TMPDIR"] = tmp
        ctx = ray.init(num_cpus=workers or os.cpu_count(), include_dashboard=False,
                       object_store_memory=256 * 1024**2, _temp_dir=tmp, **common)
    resources = ray.cluster_resources()
    node_cpus, node_gpus = largest_node()
    return {"address": address or "local", "ray_version": ray.__version__,
            "cluster_cpus": resources.get("CPU", 0), "cluster_gpus": resources.get("GPU", 0),
            "node_cpus": node_cpus, "node_gpus": node_gpus,
            "nodes": sum(1 for n in ray.nodes() if n.get("Alive")),
            "node": getattr(ctx, "address_info", {}).get("node_ip_address", "")}


def _remove_ray_tmp(tmp: str) -> None:
    import ray

    ray.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)


def worker_env(environ) -> dict:
    """What every worker, on any node, must see as the driver does: the cache locations, the
    harness's own settings (CTRLREC_*) and offline mode. API keys are not passed: a remote
    backend reads its key where it runs, and keys never enter task configs, caches or logs."""
    keep = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME")
    return {k: v for k, v in environ.items() if k.startswith("CTRLREC_") or k in keep}


def largest_node() -> tuple[int, float]:
    """The CPUs and GPUs of the largest live node: a task gets its resources on one node."""
    import ray

    alive = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    return (max([int(r.get("CPU", 0)) for r in alive] or [1]) or 1,
            max([float(r.get("GPU", 0)) for r in alive] or [0.0]))


def placement(step: Step, max_cpus: int, max_gpus: float) -> tuple[int, float]:
    """The CPUs and GPUs a step asks Ray for: never more than the largest node has (a request
    that no node can meet would wait forever); GPU requests become CPU-only where there is no GPU,
    so the same suite runs on a laptop and on a GPU cluster."""
    cpus = min(step.cpus, max_cpus)
    gpus = min(step.gpus, max_gpus) if max_gpus > 0 else 0.0
    return cpus, gpus


def resource_plan(plan: list[Step], cache: StageCache, ray_info: dict, workers: int) -> list[str]:
    """A few lines for the start of a run: the cluster, and what the steps to run will ask for."""
    cpus, gpus = int(ray_info.get("cluster_cpus") or 0), float(ray_info.get("cluster_gpus") or 0)
    node_cpus = int(ray_info.get("node_cpus") or cpus)
    node_gpus = float(ray_info.get("node_gpus", gpus) or 0)
    todo = [s for s in plan if not cache.has(s.stage, s.key)]
    if ray_info.get("started") is False:
        return [f"resources: none needed, Ray not started: all {len(plan)} steps are cached"]
    lines = [f"resources: {ray_info.get('nodes', 1)} node(s), {cpus} CPU, {gpus:g} GPU "
             f"({ray_info.get('address', 'local')}); {len(plan)} steps, {len(plan) - len(todo)} "
             f"cached, {len(todo)} to run, at most {workers} at once"]
    groups: dict[tuple, list[str]] = {}
    for s in todo:
        groups.setdefault(placement(s, max(node_cpus, 1), node_gpus), []).append(s.label)
    for (c, g), labels in sorted(groups.items()):
        names = ", ".join(labels[:4]) + (f", … (+{len(labels) - 4})" if len(labels) > 4 else "")
        lines.append(f"  {len(labels)} × {c} CPU{f' + {g:g} GPU' if g else ''}: {names}")
    wanted_gpu = [s.label for s in todo if s.gpus > 0]
    if wanted_gpu and gpus == 0:
        lines.append(f"  no GPU in the cluster: {', '.join(wanted_gpu[:3])} "
                     f"{'run' if len(wanted_gpu) > 1 else 'runs'} on CPU")
    return lines


def _execute(fn_path: str, threads: int, config: dict, *inputs):
    """Inside a Ray worker: `threads` torch threads, progress bars routed to the driver, timed."""
    import torch
    from ray.experimental import tqdm_ray

    from ctrlrec.progress import set_progress_factory

    torch.set_num_threads(max(1, threads))  # LLM steps ask for 0 CPUs: their pool computes
    set_progress_factory(lambda it=None, desc=None, total=None, **_: tqdm_ray.tqdm(
        it, desc=desc, total=total))
    module, name = fn_path.split(":")
    fn = getattr(importlib.import_module(module), name)
    t0 = time.perf_counter()
    out = fn(config, *inputs)
    import ray

    return out, {"seconds": round(time.perf_counter() - t0, 3), "host": socket.gethostname(),
                 "node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid()}


def run_plan(plan: list[Step], cache: StageCache, workers: int, want: set[str],
             task_timeout: float = 6 * 3600) -> RunResult:
    """Execute the plan; return the artefacts of the steps whose labels are in `want`. Ray is
    needed only when a step is to run: a local one is started here if none is (a run whose
    steps were all cached skips it, bench/cli.py), and `RunResult.started_ray` says so."""
    by_label = {s.label: s for s in plan}
    result = RunResult()
    done: set[str] = set()
    repaired: dict[str, str] = {}
    for s in plan:
        if cache.has(s.stage, s.key):
            problem = cache.verify(s.stage, s.key)
            if problem is None:
                done.add(s.label)
                result.timings[s.label] = {"cached": True,
                                           **cache.meta(s.stage, s.key).get("timing", {})}
                continue
            print(f"warning: stage cache entry of {s.label} ({cache.folder(s.stage, s.key)}) is "
                  f"corrupt: {problem}; removed, recomputing", file=sys.stderr, flush=True)
            cache.discard(s.stage, s.key)
            repaired[s.label] = problem
    todo = [s for s in plan if s.label not in done]
    if todo:
        _run_steps(by_label, todo, done, repaired, cache, workers, want, task_timeout, result)
    for label in want - set(result.outputs):
        s = by_label[label]
        result.outputs[label] = cache.load(s.stage, s.key)
    return result


def _run_steps(by_label: dict[str, Step], todo, done, repaired, cache, workers, want,
               task_timeout, result: RunResult) -> None:
    """The steps of `todo` as Ray tasks, each as soon as its inputs exist (`by_label`: every step
    of the plan); into `result`."""
    import ray

    if not ray.is_initialized():  # the caller found every step cached, then an entry was corrupt
        result.started_ray = start_ray(None, workers)
    # A task whose worker process or node dies is run again (up to 3 times); an exception raised
    # by the stage itself is not retried: it would only fail the same way.
    remote = ray.remote(num_cpus=1, max_retries=3)(_execute)
    resources = ray.cluster_resources()
    max_cpus = max(1, int(resources.get("CPU", 1)))  # the cluster's
    max_gpus = float(resources.get("GPU", 0))
    node_cpus, node_gpus = largest_node()  # what one task can get
    refs: dict[str, ray.ObjectRef] = {}

    def inputs_of(step):
        for d in step.deps:
            if d not in refs:  # a cached input: load it once and share it through the object store
                dep = by_label[d]
                refs[d] = ray.put(cache.load(dep.stage, dep.key))
        return [refs[d] for d in step.deps]

    inflight: dict = {}
    failures, causes = [], []
    t0 = time.monotonic()
    pools = LLMPools(max_cpus, max_gpus, node_cpus)
    # tqdm_ray also in the driver, so its bar and the workers' bars share one set of lines.
    from ray.experimental import tqdm_ray
    bar = tqdm_ray.tqdm(total=len(by_label), desc=f"stages ({len(done)} cached)")
    bar.update(len(done))
    while todo or inflight:
        for s in [s for s in todo if all(d in done for d in s.deps)]:
            if len(inflight) >= workers or failures:
                break
            cpus, gpus = placement(s, node_cpus, node_gpus)
            make_room(pools, [s], (max_cpus, max_gpus), (node_cpus, node_gpus))
            config = s.config if s.llm is None else pools.config_for(s)
            ref = remote.options(name=s.label, num_cpus=cpus, num_gpus=gpus).remote(
                s.fn, cpus, config, *inputs_of(s))
            inflight[ref] = (s, time.monotonic())
            todo.remove(s)
        if not inflight:
            break  # only steps behind a failure remain
        bar.set_description(f"stages: {', '.join(s.label for s, _ in inflight.values())[:70]}")
        ready, _ = ray.wait(list(inflight), num_returns=1, timeout=1.0)
        for ref in ready:
            s, started = inflight.pop(ref)
            pools.release(s)
            try:
                out, timing = ray.get(ref)
            except Exception as exc:  # keep going for the others; report at the end
                failures.append(f"{s.label}: {_first_line(exc)}")
                causes.append(type(getattr(exc, "cause", None) or exc).__name__)
                continue
            timing["wall_seconds"] = round(time.monotonic() - started, 3)
            timing["started_s"] = round(started - t0, 3)  # when submitted, from the run's start
            cache.save(s.stage, s.key, out, {"label": s.label, "config": s.config,
                                             "deps": s.deps, "timing": timing, "code": s.code,
                                             "inputs": [by_label[d].key for d in s.deps]})
            if any(s.label in t.deps for t in todo):
                refs[s.label] = ray.put(out)
            done.add(s.label)
            result.timings[s.label] = {"cached": False, **timing}
            if s.label in repaired:
                result.timings[s.label]["repaired_cache_entry"] = repaired[s.label]
            if s.label in want:
                result.outputs[s.label] = out
            bar.update(1)
        pools.retire([] if failures else todo)
        waiting = [t for t, _ in inflight.values() if t.llm is None]
        make_room(pools, waiting, (max_cpus, max_gpus), (node_cpus, node_gpus))
        if waiting:  # the count above is cluster-wide: a step may still find no node with room
            pools.stop_idle(older_than=POOL_IDLE_SECONDS)
        for ref, (s, started) in list(inflight.items()):
            if time.monotonic() - started > task_timeout:
                ray.cancel(ref, force=True)
                inflight.pop(ref)
                pools.release(s)
                failures.append(f"{s.label}: no result after {task_timeout:.0f} s (cancelled)")
                causes.append("TimeoutError")
    bar.close()
    result.pools = pools.close_all()
    if failures:
        raise StageFailed(f"{len(failures)} stage(s) failed (finished stages are cached; "
                          f"rerun to resume): " + "; ".join(failures), causes)


def make_room(pools: LLMPools, steps: list[Step], cluster: tuple, node: tuple) -> None:
    """Stop the idle pools when one of `steps` could never run beside the started pools: Ray
    would queue it for ever behind workers that wait for work. A step that only has to wait for
    other running steps does not stop a pool: reloading a model costs more than waiting.
    Counted cluster-wide, not per node."""
    held_cpus, held_gpus = pools.held()
    for s in steps:
        need = pools.needs(s) if s.llm else placement(s, *node)
        if need[0] > cluster[0] - held_cpus + 1e-9 or need[1] > cluster[1] - held_gpus + 1e-9:
            pools.stop_idle(keep={pool_key(s.llm)} if s.llm else set())
            return


def _first_line(exc: Exception) -> str:
    """Ray wraps a task's exception; show the original type and message in one line."""
    cause = getattr(exc, "cause", None) or exc
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[-1] if text else ''}"
