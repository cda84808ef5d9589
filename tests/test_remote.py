"""The openai backend against `bench serve` on loopback, backed by the hf backend with a tiny
random Qwen2 whose answers are mostly digits (conftest's `rating_model_dir`): the ratings that
travel over a real socket equal the in-process ones. The packaged model's own ratings are checked
in tests/test_llm.py; vLLM's own server against this client in tests/test_vllm.py."""

import threading

import numpy as np
import pytest
from conftest import RATING_ITEMS, RATING_REQUESTS, expected_from_top

from bench.serve import make_server
from ctrlrec.llm import backends as B
from ctrlrec.llm.prompts import judge_chat, rating_chat
from ctrlrec.llm.remote import EndpointError, OpenAIBackend


@pytest.fixture(scope="module")
def rater(rating_hf):
    return rating_hf


@pytest.fixture(scope="module")
def server(rater):
    srv = make_server(rater, "127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()


def test_ratings_over_http_match_in_process(rater, server):
    client = OpenAIBackend("qwen", base_url=server, batch_size=2, retries=0)
    tpl = rater.render(rating_chat(RATING_REQUESTS[0]))
    prompts = [B.fill(tpl, x) for x in RATING_ITEMS]
    local = rater.rate(prompts)
    remote = client.rate(prompts)
    for a, b in zip(local, remote):
        # the five digits hold ~all the mass, so the top-20 list the client sees contains them;
        # the server finds the prefix from the tokens and batches the 2 prompts it gets (rate:
        # 4): in float32 that moves only the last digits
        assert b.mass == pytest.approx(a.mass, abs=1e-4) and b.mass > 0.9
        assert b.expected == pytest.approx(a.expected, abs=1e-4)
    assert np.ptp([r.expected for r in local]) > 0.1  # the ratings depend on the prompt
    text = rater.render(judge_chat("a western", ["Unforgiven (1992)"]))
    assert client.generate([text], max_new_tokens=3) == rater.generate([text], 3)


def test_whole_prompts_share_their_prefix_and_give_the_ratings_of_rate(rater):
    """What `bench serve` computes from whole prompts: the prefix their tokens share runs once,
    and with the same batches the log-probabilities give exactly `rate`'s ratings."""
    prompts = [B.fill(rater.render(rating_chat(r)), x)
               for r in RATING_REQUESTS[:2] for x in RATING_ITEMS]
    vocab = rater.model.get_output_embeddings().out_features
    rated = lambda tops: expected_from_top(tops, vocab, rater.digit_ids)  # noqa: E731

    texts = [p.text for p in prompts]
    want = np.array([r.expected for r in rater.rate(prompts)])
    assert np.array_equal(rated(rater.top_logprobs(texts, vocab)), want)
    rater.prefix_reuse = False  # whole prompts in batches of 4: the same to rounding
    try:
        assert np.abs(rated(rater.top_logprobs(texts, vocab)) - want).max() < 1e-5
    finally:
        rater.prefix_reuse = True


def test_bench_serve_refuses_empty_prompts_and_reports_an_engine_failure(rater, server,
                                                                         monkeypatch):
    """A bad request gets 400 and a failing engine 500, each with one line the client shows;
    the server keeps serving."""
    client = OpenAIBackend("m", base_url=server, retries=0)
    with pytest.raises(EndpointError, match="HTTP 400: .*prompt must be a non-empty string"):
        client.generate([""], max_new_tokens=2)

    def engine_fails(*args, **kwargs):  # the real backend's network fails under it
        raise RuntimeError("CPU out of memory\nsecond line")

    with monkeypatch.context() as m:
        m.setattr(rater.model.base_model, "forward", engine_fails)
        with pytest.raises(EndpointError, match=r"HTTP 500: .*RuntimeError: CPU out of "
                                                r"memory\"\}\}$"):
            client.rate([B.RatePrompt("a", "b")])
        client.check()  # still serving
    assert client.generate(["a"], max_new_tokens=1)


def test_unreachable_endpoint_fails_with_one_clear_error():
    client = OpenAIBackend("m", base_url="http://127.0.0.1:9/v1", retries=1, timeout=2)
    with pytest.raises(EndpointError, match="failed after 2 tries"):
        client.rate([B.RatePrompt("a", "b")])


def test_bench_serve_answers_the_official_openai_client(rater, server):
    """The official `openai` package, not our client, reads `bench serve`: it lists the model and
    its top-5 log-probabilities give the in-process ratings."""
    import openai  # the dev extra installs it
    client = openai.OpenAI(base_url=server, api_key="unused", max_retries=0, timeout=120)
    assert [m.id for m in client.models.list()] == [rater.identity["model"]]
    tpl = rater.render(rating_chat(RATING_REQUESTS[1]))
    prompts = [B.fill(tpl, x) for x in RATING_ITEMS[:2]]
    reply = client.completions.create(model="qwen", prompt=[p.text for p in prompts],
                                      logprobs=5, max_tokens=1)
    for want, choice in zip(rater.rate(prompts), sorted(reply.choices, key=lambda c: c.index)):
        top = choice.logprobs.top_logprobs[0]  # {token text: logprob}, five of them
        probs = [sum(np.exp(lp) for t, lp in top.items() if t.strip() == d) for d in B.DIGITS]
        with np.errstate(divide="ignore"):
            got = B.rating_from_logprobs(np.log(probs))
        assert got.mass > 0.9 and got.mass == pytest.approx(want.mass, abs=1e-4)
        assert got.expected == pytest.approx(want.expected, abs=1e-4)
