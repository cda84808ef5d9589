"""The projection's arithmetic: a suite's steps as a graph of work, timed for a number of GPUs.

A step is a fixed part that no number of GPUs shortens (CPU work, a model load, the stage's own
coordination) plus, for LLM steps, `rounds` calls of `shards` equal shards each: with w workers
a call takes ceil(shards / w) shard times. Steps that use GPUs run one after another in plan order
(they share the cluster's GPUs); CPU steps overlap them wherever the plan's dependencies allow.
Nothing here knows about suites or cost models (bench/scaling/project.py builds the steps)."""

from __future__ import annotations

import math
from dataclasses import dataclass

INF = math.inf


@dataclass(frozen=True)
class Work:
    label: str
    deps: tuple[str, ...] = ()
    fixed_s: float = 0.0           # seconds whatever the GPU count
    shards: int = 0                # shards of LLM work in each call
    shard_s: float = 0.0           # seconds of one shard on one worker
    rounds: int = 1                # calls that wait for each other
    gpus_per_worker: float = 0.0   # 0: a CPU step; else GPUs of one worker (or of the step)

    def workers(self, gpus: float) -> int:
        if gpus == INF:
            return max(1, self.shards)  # every shard on its own worker
        return max(1, int(gpus // self.gpus_per_worker)) if self.gpus_per_worker else 1

    def seconds(self, gpus: float) -> float:
        if not self.shards:
            return self.fixed_s
        return self.fixed_s + self.rounds * math.ceil(self.shards / self.workers(gpus)) \
            * self.shard_s

    def fits(self, gpus: float) -> bool:
        """False when one worker needs more GPUs than the cluster has (it is then timed as one
        worker on GPUs lent for the step, and the projection says so)."""
        return self.gpus_per_worker <= gpus


def finish_times(steps: list[Work], gpus: float) -> dict[str, float]:
    """When each step ends: it starts once its dependencies have ended and, if it uses GPUs,
    once the GPU step before it in plan order has ended."""
    end: dict[str, float] = {}
    last_gpu = None
    for s in steps:
        after = [end[d] for d in s.deps]
        if s.gpus_per_worker and last_gpu is not None:
            after.append(end[last_gpu])
        end[s.label] = max(after, default=0.0) + s.seconds(gpus)
        if s.gpus_per_worker:
            last_gpu = s.label
    return end


def critical_path(steps: list[Work], gpus: float) -> list[str]:
    """The steps on the longest path, last first: from the step that ends last, back through
    whichever dependency (or earlier GPU step) it waited for."""
    end = finish_times(steps, gpus)
    by = {s.label: s for s in steps}
    before: dict[str, list[str]] = {}
    last_gpu = None
    for s in steps:
        before[s.label] = list(s.deps) + ([last_gpu] if s.gpus_per_worker and last_gpu else [])
        last_gpu = s.label if s.gpus_per_worker else last_gpu
    label = max(end, key=end.get) if end else None
    path = []
    while label is not None:
        path.append(label)
        start = end[label] - by[label].seconds(gpus)
        label = next((d for d in before[label] if math.isclose(end[d], start, abs_tol=1e-9)),
                     None)
    return path


def wall_seconds(steps: list[Work], gpus: float) -> float:
    return max(finish_times(steps, gpus).values(), default=0.0)


def serial_fraction(steps: list[Work], base: float = 1) -> float:
    """Amdahl's serial fraction: the share of the `base`-GPU wall time that remains with
    unlimited GPUs (every shard on a worker of its own)."""
    return wall_seconds(steps, INF) / wall_seconds(steps, base)


def project(steps: list[Work], gpu_counts: list[int]) -> list[dict]:
    """Per GPU count: wall seconds, speedup and efficiency against the smallest count, GPU-hours
    (the whole cluster held for the run), Amdahl's time for the same serial fraction, and the
    steps whose workers need more GPUs than there are."""
    base = min(gpu_counts)
    t_base = wall_seconds(steps, base)
    f = serial_fraction(steps, base)
    rows = []
    for g in gpu_counts:
        t = wall_seconds(steps, g)
        rows.append({"gpus": g, "seconds": t, "speedup": t_base / t,
                     "efficiency": t_base * base / (g * t), "gpu_hours": g * t / 3600,
                     "amdahl_seconds": t_base * (f + (1 - f) * base / g),
                     "lent": [s.label for s in steps if not s.fits(g)]})
    return rows
