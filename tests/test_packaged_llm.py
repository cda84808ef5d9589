"""The packaged Qwen2.5-Coder-1.5B-Instruct (the `qwen` fixture, loaded once): request writing,
the digit mass and discrimination on hand-checkable prompts, and the same ratings on vllm and on
llama.cpp. Kept few and small, and in one module so that one test worker loads the model
(pytest-xdist sends a module's tests to one worker). Everything else of the LLM layer is tested
on tiny models."""

import os
from importlib.util import find_spec

import numpy as np
import pytest
from conftest import (NO_VLLM_CPU, RATING_ITEMS, RATING_REQUESTS, VLLM_CPU, expected,
                      rating_prompts, require_vllm)

from ctrlrec.llm import backends as B
from ctrlrec.llm.backends import render
from ctrlrec.llm.cache import CachedLLM, LLMCache
from ctrlrec.llm.prompts import Chat, rating_chat
from ctrlrec.requests import REQUEST_GENRES, detect_genres, llm_genre_requests

pytestmark = [pytest.mark.slow, pytest.mark.llm]
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


@pytest.mark.skipif(not VLLM_CPU, reason=NO_VLLM_CPU)
def test_packaged_model_has_the_digit_mass_and_agrees_with_hf(request, capfd, monkeypatch):
    # First in the module, and the hf copy (the session's `qwen`) is loaded only once the engine
    # is shut: both at once held ~18 GB of the 24 GiB, and Ray's memory monitor then killed the
    # other xdist worker's cluster tasks (CI, bf16-native CPU: vLLM worker 9.9 GB, hf 7.8 GB).
    require_vllm()
    from ctrlrec.hardware import resolve_dtype
    from ctrlrec.llm.vllm_backend import VLLMBackend

    dtype = resolve_dtype("auto", "cpu")  # as the hf backend resolves it: float32 without bf16
    for k in THREAD_VARS:  # as in a Ray worker of the LLM pool (bench/runner.py WORKER_ENV)
        monkeypatch.setenv(k, "1")
    before = {k: os.environ.get(k) for k in THREAD_VARS}
    be = VLLMBackend("qwen2.5-coder-1.5b-instruct", dtype=dtype, threads=2, kv_cache_gib=1)
    try:
        # 4 prompts: each costs ~1.5 s per engine in float32 here, on top of a ~90 s engine start
        prompts = rating_prompts(be, RATING_REQUESTS[:2], RATING_ITEMS[:2])
        got = be.rate(prompts)
        # the engine computes with its own threads whatever this process's environment says
        # (torch sizes its pool from MKL_NUM_THREADS, then OMP_NUM_THREADS; vllm-cpu 0.32.0's
        # worker logs the count it serves with, its process title hides its environment), and
        # this process's environment is left as it was
        log = "".join(capfd.readouterr())  # vLLM logs to stdout
        assert "leaving Torch threads at 2 for serving" in log, log[-3000:]
        assert {k: os.environ.get(k) for k in THREAD_VARS} == before
    finally:
        be.close()
    qwen = request.getfixturevalue("qwen")
    assert qwen.identity["dtype"] == dtype
    want = qwen.rate(prompts)
    assert min(r.mass for r in got) > 0.9
    # float32, AVX2 CPU: max |diff| 1.1e-5 over 256 prompts (results/engines/); bf16
    # engines round differently at every layer, so there only a gross error is caught
    diff = np.abs(expected(got) - expected(want)).max()
    assert diff < (1e-3 if dtype == "float32" else 0.1), diff


@pytest.fixture(scope="module")
def packaged_gguf():
    """The packaged GGUF on llama.cpp (what `backend: auto` runs on a CPU without AMX), loaded
    once."""
    if find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed (scripts/setup.sh)")
    from ctrlrec.llm.llamacpp_backend import LlamaCppBackend

    be = LlamaCppBackend("qwen2.5-coder-1.5b-instruct", threads=2, batch_size=4)
    yield be
    be.close()


def test_the_packaged_model_writes_valid_requests(request, split, movielens, tmp_path):
    # One user, genre requests only, on llama.cpp (what `backend: auto` picks on a CPU without
    # AMX; hf where it is not installed). On a 2-core AVX2 CPU, alone, this test took 19.6 s on
    # llama.cpp and 31 s on hf float32. Open-ended parsing, retries and style rotation are
    # tested on the tiny model in tests/test_generation.py.
    be = request.getfixturevalue("packaged_gguf" if find_spec("llama_cpp") else "qwen")
    users = split.user_ids[:1]
    llm = CachedLLM(lambda: be, be.identity, LLMCache(tmp_path / "c.sqlite"))
    draw = lambda c: render(be.tokenizer, c)  # noqa: E731
    genre = llm_genre_requests(llm, draw, split, movielens.items, users)
    assert (genre.source == "llm").all()
    assert set(genre.genre) <= set(REQUEST_GENRES)
    for text, g in zip(genre.text[genre.source == "llm"], genre.genre[genre.source == "llm"]):
        assert detect_genres(text) == [g]  # an accepted request names exactly its one genre
    calls = llm.calls
    again = llm_genre_requests(llm, draw, split, movielens.items, users)
    assert again.equals(genre) and llm.calls == calls  # cached: no new calls


def test_packaged_model_passes_the_mass_check_and_discriminates(qwen):
    be = qwen
    kids = be.render(rating_chat("I want a funny movie to watch with my kids"))
    crime = be.render(rating_chat("I'm in the mood for a gritty crime film"))
    toy, pulp = "Toy Story (1995). Genres: Animation, Children, Comedy.", \
        "Pulp Fiction (1994). Genres: Crime, Drama."
    r = be.rate([B.fill(kids, toy), B.fill(kids, pulp), B.fill(crime, toy), B.fill(crime, pulp)])
    assert min(x.mass for x in r) > 0.9
    assert r[0].expected > r[1].expected + 0.1      # kids: Toy Story over Pulp Fiction
    assert r[3].expected > r[2].expected + 0.5      # crime: the order reverses


def test_packaged_gguf_on_llamacpp_rates_like_hf(packaged_gguf, qwen):
    be = packaged_gguf
    prompts = rating_prompts(be, RATING_REQUESTS[:2], RATING_ITEMS)
    got = be.rate(prompts)
    text = be.generate([be.render(Chat("You answer with a film title only.",
                                       "Name one famous crime film."))], 12)
    want = qwen.rate(prompts)
    assert min(r.mass for r in got) > 0.9
    # it computes with the Q4_K_M weights themselves, hf with their dequantised bf16 copy:
    # 24 prompts agreed at Pearson 0.997, max |diff| 0.089 (README, llama.cpp)
    assert np.abs(expected(got) - expected(want)).max() < 0.2
    assert len(text[0].split()) >= 1
