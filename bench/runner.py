"""Runs a plan on Ray: cached steps are skipped, the rest run as Ray tasks as soon as their inputs
exist, at most `workers` at a time; every finished output is cached by the driver at once, so a
failed or killed run loses nothing it finished."""

from __future__ import annotations

import importlib
import os
import socket
import tempfile
import time
from dataclasses import dataclass, field

from .cache import StageCache
from .plan import Step

WORKER_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
              "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


class StageFailed(RuntimeError):
    pass


@dataclass
class RunResult:
    outputs: dict = field(default_factory=dict)   # label -> artefacts (for the steps asked for)
    timings: dict = field(default_factory=dict)   # label -> {"cached": bool, "seconds": float, ...}


def start_ray(address: str | None, workers: int | None) -> dict:
    """Join `address`, or start a quiet local instance with `workers` CPUs."""
    import ray

    if ray.is_initialized():
        return {"address": "already initialised"}
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    env = {**WORKER_ENV, **{k: os.environ[k] for k in ("CTRLREC_CACHE", "CTRLREC_LLM_CACHE",
                                                        "HF_HUB_OFFLINE") if k in os.environ}}
    common = dict(runtime_env={"env_vars": env}, log_to_driver=True,
                  logging_level="ERROR", configure_logging=True)
    if address:
        ctx = ray.init(address=address, **common)
    else:
        tmp = os.environ.get("RAY_TMPDIR") or tempfile.mkdtemp(prefix="ray", dir="/tmp")
        os.environ["RAY_TMPDIR"] = tmp
        ctx = ray.init(num_cpus=workers or os.cpu_count(), include_dashboard=False,
                       object_store_memory=256 * 1024**2, _temp_dir=tmp, **common)
    return {"address": address or "local", "ray_version": ray.__version__,
            "cluster_cpus": ray.cluster_resources().get("CPU", 0),
            "node": getattr(ctx, "address_info", {}).get("node_ip_address", "")}


def _execute(fn_path: str, threads: int, config: dict, *inputs):
    """Inside a Ray worker: `threads` torch threads, progress bars routed to the driver, timed."""
    import torch
    from ray.experimental import tqdm_ray

    from ctrlrec.progress import set_progress_factory

    torch.set_num_threads(threads)
    set_progress_factory(lambda it=None, desc=None, total=None, **_: tqdm_ray.tqdm(
        it, desc=desc, total=total))
    module, name = fn_path.split(":")
    fn = getattr(importlib.import_module(module), name)
    t0 = time.perf_counter()
    out = fn(config, *inputs)
    return out, {"seconds": round(time.perf_counter() - t0, 3), "host": socket.gethostname(),
                 "pid": os.getpid()}


def run_plan(plan: list[Step], cache: StageCache, workers: int, want: set[str],
             task_timeout: float = 6 * 3600) -> RunResult:
    """Execute the plan; return the artefacts of the steps whose labels are in `want`."""
    import ray

    remote = ray.remote(num_cpus=1, max_retries=1)(_execute)
    max_cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    by_label = {s.label: s for s in plan}
    result = RunResult()
    done: set[str] = set()
    refs: dict[str, ray.ObjectRef] = {}
    for s in plan:
        if cache.has(s.stage, s.key):
            done.add(s.label)
            result.timings[s.label] = {"cached": True, **cache.meta(s.stage, s.key).get("timing", {})}
    todo = [s for s in plan if s.label not in done]

    def inputs_of(step):
        for d in step.deps:
            if d not in refs:  # a cached input: load it once and share it through the object store
                dep = by_label[d]
                refs[d] = ray.put(cache.load(dep.stage, dep.key))
        return [refs[d] for d in step.deps]

    inflight: dict = {}
    failures = []
    # tqdm_ray also in the driver, so its bar and the workers' bars share one set of lines.
    from ray.experimental import tqdm_ray
    bar = tqdm_ray.tqdm(total=len(plan), desc=f"stages ({len(done)} cached)")
    bar.update(len(done))
    while todo or inflight:
        for s in [s for s in todo if all(d in done for d in s.deps)]:
            if len(inflight) >= workers or failures:
                break
            cpus = min(s.cpus, max_cpus)
            ref = remote.options(name=s.label, num_cpus=cpus, num_gpus=s.gpus).remote(
                s.fn, cpus, s.config, *inputs_of(s))
            inflight[ref] = (s, time.monotonic())
            todo.remove(s)
        if not inflight:
            break  # only steps behind a failure remain
        bar.set_description(f"stages: {', '.join(s.label for s, _ in inflight.values())[:70]}")
        ready, _ = ray.wait(list(inflight), num_returns=1, timeout=1.0)
        for ref in ready:
            s, started = inflight.pop(ref)
            try:
                out, timing = ray.get(ref)
            except Exception as exc:  # keep going for the others; report at the end
                failures.append(f"{s.label}: {_first_line(exc)}")
                continue
            timing["wall_seconds"] = round(time.monotonic() - started, 3)
            cache.save(s.stage, s.key, out, {"label": s.label, "config": s.config,
                                             "deps": s.deps, "timing": timing})
            if any(s.label in t.deps for t in todo):
                refs[s.label] = ray.put(out)
            done.add(s.label)
            result.timings[s.label] = {"cached": False, **timing}
            if s.label in want:
                result.outputs[s.label] = out
            bar.update(1)
        for ref, (s, started) in list(inflight.items()):
            if time.monotonic() - started > task_timeout:
                ray.cancel(ref, force=True)
                inflight.pop(ref)
                failures.append(f"{s.label}: no result after {task_timeout:.0f} s (cancelled)")
    bar.close()
    if failures:
        raise StageFailed(f"{len(failures)} stage(s) failed (finished stages are cached; "
                          f"rerun to resume): " + "; ".join(failures))
    for label in want - set(result.outputs):
        s = by_label[label]
        result.outputs[label] = cache.load(s.stage, s.key)
    return result


def _first_line(exc: Exception) -> str:
    """Ray wraps a task's exception; show the original type and message in one line."""
    cause = getattr(exc, "cause", None) or exc
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[-1] if text else ''}"
