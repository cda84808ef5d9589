"""The LLM layer: rating maths, tokenizer digits, prefix reuse, the persistent cache, and the
packaged Qwen2.5-Coder-1.5B model on a few hand-checkable prompts."""

import os
import subprocess
import sys

import numpy as np
import pytest

from ctrlrec.llm import backends as B
from ctrlrec.llm.cache import CachedLLM, LLMCache, call_key
from ctrlrec.llm.prompts import ITEM_SLOT, judge_chat, rating_chat


@pytest.fixture
def tiny(tiny_backend):
    return tiny_backend


def test_expected_rating_and_mass_by_hand():
    r = B.rating_from_logprobs(np.log([0.1, 0.1, 0.2, 0.3, 0.2]))
    assert r.mass == pytest.approx(0.9)
    assert r.expected == pytest.approx((0.1 + 0.2 + 0.6 + 1.2 + 1.0) / 0.9)
    assert sum(r.probs) == pytest.approx(1.0)


def test_digit_tokens_are_single_tokens_that_decode_to_digits(tokenizer):
    ids = B.digit_token_ids(tokenizer)
    assert len(ids) == 5
    for d, variants in zip("12345", ids):
        assert all(tokenizer.decode([i]).strip() == d for i in variants)


def test_rating_prompt_puts_the_request_in_the_prefix_and_ends_at_the_answer(tokenizer):
    tpl = B.render(tokenizer, rating_chat("a scary film", ["Alien (1979): 5/5"]))
    assert "a scary film" in tpl.prefix and "Alien (1979): 5/5" in tpl.prefix
    assert ITEM_SLOT not in tpl.prefix + tpl.suffix
    assert tpl.suffix.endswith("<|im_start|>assistant\n")
    filled = B.fill(tpl, "Jaws (1975). Genres: Horror.")
    full = filled.text
    assert full.index("a scary film") < full.index("Jaws (1975)")
    # split tokenisation (prefix reuse) gives the very tokens that a whole-prompt backend sends
    enc = lambda t: tokenizer.encode(t, add_special_tokens=False)  # noqa: E731
    assert enc(filled.prefix) + enc(filled.suffix) == enc(full)
    assert isinstance(B.render(tokenizer, judge_chat("x", ["A", "B"])), str)


def test_stages_render_every_prompt_kind_as_the_models_own_tokenizer_does(tokenizer):
    """Stages render prompts with `template_tokenizer` (no torch import); the text must be what
    the model's own tokenizer class renders, for every kind of conversation the project has."""
    from ctrlrec.llm import prompts as P

    light = B.template_tokenizer(tokenizer.name_or_path)
    assert type(light) is not type(tokenizer)  # really the plain class, not AutoTokenizer's
    seen = ["Alien (1979): 5/5", "Café Society – “Paris” 😀: 2/5"]
    chats = [P.rating_chat("a scary film", seen), P.rating_chat("x", words=P.words_for("book")),
             P.judge_chat("kids"), P.judge_chat("kids", ["Babe (1995)", "Fargo (1996)"]),
             P.genre_request_chat(seen, ["Horror", "Drama"], avoid=["Alien"]),
             P.open_request_chat(seen, "direct", ["I want fun"]), P.summary_chat("Heat (1995)"),
             P.train_requests_chat(["a western"], 5, 3)]
    for chat in chats:
        assert B.render(light, chat) == B.render(tokenizer, chat), chat
    # what it saves: a stage process that renders prompts never imports torch
    code = ("import sys\n"
            "from bench.stages.llm import open_llm\n"
            "from ctrlrec.llm.backends import render, template_tokenizer\n"
            "from ctrlrec.llm.prompts import rating_chat\n"
            f"render(template_tokenizer({tokenizer.name_or_path!r}), rating_chat('x'))\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.stdout.strip() == "False", out.stderr[-2000:]


def test_prefix_reuse_and_batching_do_not_change_ratings(tiny):
    tpl_a = tiny.render(rating_chat("a funny movie for kids"))
    tpl_b = tiny.render(rating_chat("something dark and violent"))
    items = ["Toy Story (1995)", "Pulp Fiction (1994)", "Heat (1995)", "Babe (1995)", "Fargo"]
    prompts = [B.fill(t, x) for t in (tpl_a, tpl_b) for x in items]
    tiny.prefix_reuse = True
    reused = tiny.rate(prompts)
    tiny.prefix_reuse = False
    full = tiny.rate(prompts)
    tiny.batch_size = 1
    single = tiny.rate(prompts)
    tiny.prefix_reuse, tiny.batch_size = True, 3
    for a, b, c in zip(reused, full, single):
        assert a.expected == pytest.approx(b.expected, abs=1e-4)
        assert b.expected == pytest.approx(c.expected, abs=1e-4)
        assert 1.0 <= a.expected <= 5.0 and 0 < a.mass < 1


def test_cache_makes_no_repeated_calls_and_keys_on_the_model(tiny, tmp_path):
    db = tmp_path / "llm.sqlite"
    prompts = [B.fill(tiny.render(rating_chat("a western")), x) for x in ("Unforgiven", "Heat")]
    first = CachedLLM(lambda: tiny, tiny.identity, LLMCache(db))
    a = first.rate(prompts + prompts[:1])
    assert first.calls == 2 and first.hits == 0
    again = CachedLLM(lambda: pytest.fail("the model must not load"), tiny.identity, LLMCache(db))
    b = again.rate(prompts)
    assert again.calls == 0 and again.hits == 2
    assert [x.expected for x in a[:2]] == [x.expected for x in b]
    other = CachedLLM(lambda: tiny, {**tiny.identity, "model": "another"}, LLMCache(db))
    other.rate(prompts)
    assert other.calls == 2
    assert call_key({"m": 1}, "rate", "p", {}) != call_key({"m": 2}, "rate", "p", {})


def test_generation_is_cached_too(tiny, tmp_path):
    llm = CachedLLM(lambda: tiny, tiny.identity, LLMCache(tmp_path / "g.sqlite"))
    text = tiny.render(judge_chat("x", ["A"]))
    out = llm.generate([text], max_new_tokens=3)
    assert llm.generate([text], max_new_tokens=3) == out and llm.calls == 1
    llm.generate([text], max_new_tokens=4)
    assert llm.calls == 2


def test_a_model_folder_lands_once_and_replaces_only_an_unfinished_one(tmp_path):
    """Two stages that build the same model folder at once (a GGUF's tokenizer, a dequantised
    model) each write a private copy: the first finished copy stays, the later one is dropped,
    and a leftover of an interrupted build (no DONE) is replaced."""
    from ctrlrec.llm.models import land

    def built(name, text):
        d = tmp_path / name
        d.mkdir()
        (d / "tokenizer.json").write_text(text)
        (d / "DONE").write_text("")
        return d

    out = tmp_path / "tok"
    out.mkdir()
    (out / "tokenizer.json").write_text("half")  # interrupted: no DONE
    land(built("a", "first"), out)
    land(built("b", "second"), out)
    assert (out / "tokenizer.json").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tok"]


def test_new_weights_saved_at_a_models_path_make_it_another_model(tiny_model_dir, tmp_path,
                                                                   monkeypatch):
    """A checkpoint saved over the last one at the same path (same files, same sizes): its
    answers' revision and its stages' key change, so nothing cached for the old weights is
    reused. Each file's digest is read once per version of the file."""
    import shutil

    import torch
    from transformers import Qwen2ForCausalLM

    from bench.plan import llm_key
    from bench.suitefile import load_suite
    from ctrlrec.llm.models import llm_source
    from ctrlrec.llm.revision import model_revision

    monkeypatch.setenv("CTRLREC_CACHE", str(tmp_path / "cache"))
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_model_dir, ckpt)

    def key():
        suite = load_suite("suites/genre.yaml", [f"methods.1.llm.model={ckpt}"])
        return llm_key(suite.methods[1].llm)

    before, rev = key(), model_revision(str(ckpt))
    assert before["revision"] == rev == llm_source(str(ckpt))[1]
    sizes = {f.name: f.stat().st_size for f in ckpt.iterdir()}
    model = Qwen2ForCausalLM.from_pretrained(ckpt)
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight.mul_(-1)
    model.save_pretrained(ckpt)
    assert {f.name: f.stat().st_size for f in ckpt.iterdir()} == sizes
    after = key()
    assert after["revision"] != rev and {**after, "revision": rev} == before
    digests = list((tmp_path / "cache" / "file-digests").iterdir())
    assert model_revision(str(ckpt)) == after["revision"]
    assert list((tmp_path / "cache" / "file-digests").iterdir()) == digests


def test_the_packaged_model_keeps_the_revision_the_committed_results_were_keyed_by():
    """Its folder's cheap fingerprint (names and sizes; content pinned by the package): answers
    cached for the committed runs are found again, and stage keys of suites that name the alias
    hold no revision."""
    import json
    from pathlib import Path

    from bench.plan import llm_key
    from bench.suitefile import load_suite
    from ctrlrec.llm.models import resolve_llm
    from ctrlrec.llm.revision import model_revision

    alias = "qwen2.5-coder-1.5b-instruct"
    manifest = Path(__file__).parent.parent / "results/open_ended/avx512bf16/manifest.json"
    stages = json.loads(manifest.read_text())["llm"].values()
    committed = {s["backend"]["revision"] for s in stages
                 if s.get("backend", {}).get("model") == alias}
    assert {model_revision(resolve_llm(alias))} == committed
    assert "revision" not in llm_key(load_suite("suites/genre.yaml").methods[1].llm)


def test_shared_prefix_groups_follow_the_tokens_a_request_shares():
    """Whole prompts grouped by the leading tokens they share (what `bench serve` receives): a
    request's prompts form one group over its whole prefix, another request that shares only the
    system part forms its own (joining would recompute more than it saves), every member keeps a
    token of its own, and members keep their order."""
    from ctrlrec.llm.backends import shared_prefix_groups

    system = list(range(100, 160))                     # 60 tokens both requests share
    a, b = system + [1] * 40, system + [2] * 40        # two requests' 100-token prefixes
    items = [[7, 8, 9], [7, 5], [3, 4, 4, 4], [6]]
    ids = [b + items[0], a + items[0], a + items[1], b + items[2], a + items[2], a + items[3]]
    assert shared_prefix_groups(ids) == [(100, [1, 2, 4, 5]), (100, [0, 3])]
    # a prompt that is the start of another: each still computes its own last token
    assert shared_prefix_groups([[5, 6, 7], [5, 6]]) == [(1, [0, 1])]
    assert shared_prefix_groups([[5, 6, 7]]) == [(2, [0])]
