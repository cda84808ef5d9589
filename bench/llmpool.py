"""A pool of LLM workers per model: Ray actors that load the model once and serve shards of
prompts to every stage that uses the same model (scorer, teacher and judge share a pool when they
are the same model with the same settings).

Why actors and not Ray Data's actor-pool `map_batches`: a stage's prompts are known only inside
the stage (they depend on its inputs), only the prompts missing from the answer cache are sent,
and each shard's answers must be committed as it returns, so that a killed worker loses one shard
and a rerun asks nothing twice. A long-lived actor per worker gives exactly that: stages submit
shards as plain actor calls, several stages at once, and the pool outlives each of them.

Shards are fixed by content (`ctrlrec.llm.cache.CachedLLM`): the same answers come back whatever
the number of workers, and a shard whose worker dies is asked again, whole, of another one."""

from __future__ import annotations

import os
import socket
import time

from .suite import stable_hash

# seconds to wait for the workers' stats at stop: all of them, then those that started
STATS_WAIT = (15.0, 300.0)


class LLMWorker:
    """One model copy. Loads on the first call (timed), so a pool that is never used costs
    nothing but a process."""

    def __init__(self, backend: str, model: str, options: dict, threads: int, index: int = 0):
        from ctrlrec.llm.registry import BACKENDS

        if "first_core" in BACKENDS[backend].options.model_fields:
            # engines that bind their threads to cores: the i-th worker of a pool starts at core
            # i * threads, so workers that share a machine take different cores
            options = {**options, "first_core": index * threads}
        self.args = (backend, model, options)
        self.threads = threads
        self.backend = None
        self.load_seconds = None
        self.prompts = 0
        self.busy = 0.0
        self.by_stage: dict[str, int] = {}  # prompts answered for each calling stage

    def _loaded(self):
        if self.backend is None:
            from ctrlrec.llm.registry import BACKENDS, load_backend

            backend, model, options = self.args
            if BACKENDS[backend].torch:  # else torch is never imported here (~3 s, ~220 MB)
                import torch
                torch.set_num_threads(self.threads)
            t0 = time.perf_counter()
            self.backend = load_backend(backend, model, **options)
            self.load_seconds = time.perf_counter() - t0
        return self.backend

    def run(self, kind: str, inputs: list, params: dict, batch_size: int | None = None,
            caller: str = "") -> tuple[list, dict, dict]:
        """The answers, the backend's settings (device, dtype, batch size) for manifests, and
        this call's work (seconds, process).
        `batch_size` is the calling stage's own: stages that share a model may batch differently
        (batching can change the last digits of an answer, so it stays the stage's setting)."""
        backend = self._loaded()
        if batch_size is not None and batch_size != backend.batch_size:
            backend.batch_size = batch_size
            # what the backend kept: llama.cpp caps it at the sequences it loaded with
            backend.settings = {**backend.settings, "batch_size": backend.batch_size}
        t0 = time.perf_counter()
        try:
            out = backend.rate(inputs) if kind == "rate" else backend.generate(inputs, **params)
        except Exception:
            if getattr(backend, "closed", False):  # its engine died: the next call loads anew
                self.backend = None
            raise
        busy = time.perf_counter() - t0
        self.busy += busy
        self.prompts += len(inputs)
        self.by_stage[caller] = self.by_stage.get(caller, 0) + len(inputs)
        # the call's own work goes back with its answers: a worker's counters die with its
        # process (Ray restarts it, e.g. when the node runs short of memory), the caller's do not
        return out, backend.settings, {"busy_seconds": busy, "pid": os.getpid()}

    def ready(self) -> bool:
        """Answers once the actor's process is up: the pool pings it at start, so that at stop a
        worker that never got its CPUs is told apart from one that is merely slow to answer."""
        return True

    def info(self) -> dict:
        import ray

        return {"load_seconds": self.load_seconds, "prompts": self.prompts,
                # a restarted worker has lost what its earlier process did
                "restarted": ray.get_runtime_context().was_current_actor_reconstructed,
                "prompts_by_stage": self.by_stage, "busy_seconds": round(self.busy, 3),
                "host": socket.gethostname(),
                "node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid(),
                "settings": self.backend.settings if self.backend is not None else None}


def pool_size(spec: dict, cpus: int, gpus: float) -> int:
    """Workers for one model: as asked, else one per `num_gpus` GPUs of the cluster, else (no
    GPU) one per `threads` CPUs."""
    if spec.get("workers"):
        return int(spec["workers"])
    if spec["gpus"] and gpus:
        return max(1, int(gpus // spec["gpus"]))
    return max(1, int(cpus // max(1, spec["threads"])))


class LLMPools:
    """The runner's pools, one per model and settings. A pool starts when the first step that
    needs it starts and lives while later steps still need it, so scorer, teacher and judge of
    one model load it once per run. Its workers hold CPUs (or GPUs) though, and other steps may
    need them between two LLM stages: an idle pool (no running step uses it) is stopped when a
    step that is ready to run would not fit beside it, and started again by its next step."""

    def __init__(self, cpus: int, gpus: float, node_cpus: int | None = None):
        self.cpus, self.gpus = cpus, gpus  # the cluster's
        self.node_cpus = node_cpus or cpus  # the largest node's: a worker's threads fit on it
        self.pools: dict[str, dict] = {}  # every pool of the run; started ones hold "actors"
        self.of_step: dict[str, str] = {}  # running step label -> its pool
        self.idle_since: dict[str, float] = {}  # started pool -> when its last step ended

    def config_for(self, step) -> dict:
        """The step's config with its pool's workers added (started if needed)."""
        spec, key = step.llm, pool_key(step.llm)
        if key not in self.pools:
            n, threads, gpus = self.shape(spec)
            self.pools[key] = {"key": key, "model": spec["key"]["model"], "workers": n,
                                 "threads": threads, "gpus": gpus, "steps": [], "starts": 0}
        pool = self.pools[key]
        if "actors" not in pool:
            pool["actors"] = start_pool(spec["key"], spec["runtime"], pool["workers"],
                                        pool["threads"], pool["gpus"])
            pool["pings"] = [a.ready.remote() for a in pool["actors"]]
            pool["starts"] += 1
        pool["steps"].append(step.label)
        self.of_step[step.label] = key
        self.idle_since.pop(key, None)
        runtime = {**step.config.get("_runtime", {}), "llm_pool": pool["actors"],
                   "llm_caller": step.label}
        return {**step.config, "_runtime": runtime}

    def shape(self, spec: dict) -> tuple[int, int, float]:
        """Workers, threads and GPUs per worker of the pool a step needs."""
        return (pool_size(spec, self.cpus, self.gpus), min(spec["threads"], self.node_cpus),
                spec["gpus"] if self.gpus else 0.0)

    def held(self) -> tuple[float, float]:
        """CPUs and GPUs that the started pools hold."""
        live = [p for p in self.pools.values() if "actors" in p]
        return (sum(p["workers"] * p["threads"] for p in live),
                sum(p["workers"] * p["gpus"] for p in live))

    def needs(self, step) -> tuple[float, float]:
        """What launching `step` adds to the pools' hold: nothing when its pool is up."""
        pool = self.pools.get(pool_key(step.llm))
        if pool is not None and "actors" in pool:
            return 0, 0.0
        n, threads, gpus = self.shape(step.llm)
        return n * threads, n * gpus

    def release(self, step) -> None:
        """`step` ended; its pool stays up for later steps."""
        key = self.of_step.pop(step.label, None)
        if key is not None and key not in self.of_step.values():
            self.idle_since[key] = time.monotonic()

    def stop_idle(self, keep=frozenset(), older_than: float = 0.0) -> None:
        """Stop the started pools that no running step uses (for more than `older_than`
        seconds), but those in `keep`."""
        now = time.monotonic()
        for key, since in list(self.idle_since.items()):
            if key not in keep and now - since >= older_than:
                self._stop(key)

    def retire(self, pending) -> None:
        """Stop for good the pools that no running or `pending` step will use."""
        wanted = set(self.of_step.values()) | {pool_key(s.llm) for s in pending if s.llm}
        for key in self.pools:
            if key not in wanted:
                self._stop(key)

    def _stop(self, key: str) -> None:
        import ray

        pool = self.pools[key]
        actors = pool.pop("actors", None)
        self.idle_since.pop(key, None)
        if actors is None:
            return
        # What each worker did: model load time, prompts, busy seconds, where it ran. The
        # scaling report needs these, so a worker that started is waited for (a loaded machine
        # can keep Ray's control plane from answering for a while); one that never got its CPUs
        # has nothing to say and holds nothing up.
        refs = [a.info.remote() for a in actors]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=STATS_WAIT[0])
        pings = pool.pop("pings")
        started = set(ray.wait(pings, num_returns=len(pings), timeout=0)[0])
        late = [r for r, p in zip(refs, pings) if r not in ready and p in started]
        if late:
            ready += ray.wait(late, num_returns=len(late), timeout=STATS_WAIT[1])[0]
        stats = [{"start": pool["starts"], **(
            _stats(r) if r in ready else {"prompts": 0, "note": "not started"} if p not in started
            else {"prompts": 0, "note": f"no answer in {sum(STATS_WAIT):.0f} s"})}
            for r, p in zip(refs, pings)]
        for a in actors:
            ray.kill(a)
        # a pool stopped for another step and started again later lists each start's workers
        pool["worker_stats"] = pool.get("worker_stats", []) + stats

    def close_all(self) -> list[dict]:
        for key in self.pools:
            self._stop(key)
        return list(self.pools.values())


def pool_key(spec: dict) -> str:
    """Steps share a pool when they load the same model the same way; batch and shard sizes
    are the calling stage's own."""
    load = {k: v for k, v in spec["key"].items() if k not in ("batch_size", "shard_size")}
    return stable_hash({"llm": load, "runtime": spec["runtime"],
                        "threads": spec["threads"], "gpus": spec["gpus"]})[:12]


def start_pool(llm: dict, runtime_llm: dict, workers: int, threads: int, gpus: float) -> list:
    """`workers` actors for one model; each asks Ray for `threads` CPUs and `gpus` GPUs and is
    restarted if its process dies (the shard it was serving goes to another worker)."""
    import ray

    from ctrlrec.llm.registry import backend_options

    options = backend_options(llm["backend"], {**llm, **runtime_llm})
    # SPREAD: model copies go to different nodes where they can, so that a pool uses them all
    remote = ray.remote(LLMWorker).options(num_cpus=threads, num_gpus=gpus, max_restarts=-1,
                                           max_task_retries=0, scheduling_strategy="SPREAD")
    return [remote.remote(llm["backend"], llm["model"], options, threads, i)
            for i in range(workers)]


def _stats(ref) -> dict:
    import ray

    try:
        return ray.get(ref)
    except Exception as exc:  # noqa: BLE001 - stats are a report, never a reason to fail
        return {"prompts": 0, "note": f"unavailable ({type(exc).__name__})"}


class PoolExecutor:
    """Runs shards on a pool's actors, one shard per actor at a time, yielding (index, answers)
    as shards finish. A shard whose actor or engine died is handed to the next free actor, up to
    `retries` times; every wait has a timeout."""

    def __init__(self, actors: list, batch_size: int | None = None, caller: str = "",
                 retries: int = 3, timeout: float = 3600):
        self.actors = list(actors)
        self.batch_size, self.caller = batch_size, caller
        self.retries = retries
        self.timeout = timeout
        self.settings = {"pool_workers": len(self.actors)}
        # what the pool did for this caller, kept here so that it survives worker restarts
        self.work = {"prompts": 0, "shards": 0, "busy_seconds": 0.0, "retried_shards": 0,
                     "worker_pids": []}

    def __call__(self, kind: str, shards: list[list], params: dict):
        import ray
        from ray.exceptions import RayActorError, WorkerCrashedError

        from ctrlrec.llm.backends import EngineDied

        queue = list(range(len(shards)))
        tries = {i: 0 for i in queue}
        free = list(self.actors)
        inflight: dict = {}
        while queue or inflight:
            while queue and free:
                i, actor = queue.pop(0), free.pop(0)
                ref = actor.run.remote(kind, shards[i], params, self.batch_size, self.caller)
                inflight[ref] = (i, actor, time.monotonic())
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=10.0)
            for ref in ready:
                i, actor, _ = inflight.pop(ref)
                free.append(actor)  # a restarted actor serves again
                try:
                    out, settings, work = ray.get(ref)
                # a dead worker process, or a live one whose engine died (Ray raises that as
                # a RayTaskError that is also an EngineDied): the shard goes to the next worker
                except (RayActorError, WorkerCrashedError, EngineDied) as exc:
                    tries[i] += 1
                    self.work["retried_shards"] += 1
                    if tries[i] > self.retries:
                        raise RuntimeError(f"LLM shard {i} failed on {tries[i]} workers: "
                                           f"{type(exc).__name__}") from None
                    queue.append(i)
                    continue
                self.settings = {**settings, "pool_workers": len(self.actors)}
                w = self.work
                w["prompts"] += len(shards[i])
                w["shards"] += 1
                w["busy_seconds"] += work["busy_seconds"]
                if work["pid"] not in w["worker_pids"]:
                    w["worker_pids"].append(work["pid"])
                yield i, out
            for ref, (i, _, started) in list(inflight.items()):
                if time.monotonic() - started > self.timeout:
                    raise TimeoutError(f"LLM shard {i}: no answer after {self.timeout:.0f} s")
