"""The llamacpp backend on a tiny Qwen2 written as a float32 GGUF (the real architecture and the
packaged model's tokenizer, random weights): its ratings and greedy text equal the hf backend's on
the same weights, whatever the movie batch, and a suite section that names it is checked."""

from importlib.util import find_spec

import numpy as np
import pytest
from conftest import RATING_ITEMS, RATING_REQUESTS, expected, expected_from_top, rating_prompts

pytestmark = pytest.mark.skipif(find_spec("llama_cpp") is None,
                                reason="llama-cpp-python is not installed (scripts/setup.sh)")


def write_qwen2_gguf(model, tokenizer_gguf, out):
    """A transformers Qwen2 model -> a float32 GGUF llama.cpp loads, with the tokenizer fields
    of an existing GGUF. Qwen2 uses NeoX rotary embeddings in both, so Q and K go in unpermuted."""
    import gguf

    cfg = model.config
    src = gguf.GGUFReader(tokenizer_gguf)
    w = gguf.GGUFWriter(str(out), "qwen2")
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_freq_base(cfg.rope_parameters["rope_theta"] if hasattr(cfg, "rope_parameters")
                         else cfg.rope_theta)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    for key, field in src.fields.items():
        if key.startswith("tokenizer."):
            value = field.contents()
            vtype = field.types[0]
            sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
            w.add_key_value(key, value, vtype, sub_type=sub)
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight":
             "output_norm.weight", "lm_head.weight": "output.weight"}
    per_layer = {"input_layernorm.weight": "attn_norm.weight",
                 "post_attention_layernorm.weight": "ffn_norm.weight",
                 "self_attn.o_proj.weight": "attn_output.weight",
                 "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
                 "mlp.down_proj.weight": "ffn_down.weight"}
    for x in "qkv":
        per_layer[f"self_attn.{x}_proj.weight"] = f"attn_{x}.weight"
        per_layer[f"self_attn.{x}_proj.bias"] = f"attn_{x}.bias"
    for name, t in model.state_dict().items():
        if name.startswith("model.layers."):
            i, rest = name.removeprefix("model.layers.").split(".", 1)
            target = f"blk.{i}.{per_layer[rest]}"
        else:
            target = names[name]
        w.add_tensor(target, t.detach().float().numpy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory, tokenizer):
    """hf and llamacpp backends over the same tiny random Qwen2 (vocab as in the GGUF)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from ctrlrec.llm.backends import HFBackend
    from ctrlrec.llm.llamacpp_backend import LlamaCppBackend
    from ctrlrec.llm.models import ensure_gguf

    packaged = ensure_gguf("qwen2.5-coder-1.5b-instruct")
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=151936, hidden_size=64, intermediate_size=128,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=1024, tie_word_embeddings=False,
                      initializer_range=0.3)  # ratings that differ between prompts
    model = Qwen2ForCausalLM(cfg).eval()
    folder = tmp_path_factory.mktemp("tiny-gguf")
    model.save_pretrained(folder / "hf")
    tokenizer.save_pretrained(folder / "hf")
    write_qwen2_gguf(model, packaged, folder / "tiny.gguf")
    hf = HFBackend(str(folder / "hf"), dtype="float32", batch_size=4, threads=1)
    lcpp = LlamaCppBackend(str(folder / "tiny.gguf"), batch_size=3, threads=1, n_ctx=1024)
    yield hf, lcpp
    lcpp.close()


@pytest.mark.slow  # the fixture writes a 80 MB GGUF (~25 s)
def test_ratings_equal_hf_on_the_same_weights_for_any_batch(tiny_pair):
    hf, lcpp = tiny_pair
    prompts = rating_prompts(hf, RATING_REQUESTS[:3], RATING_ITEMS[:5])
    want = hf.rate(prompts)
    got = lcpp.rate(prompts)  # three requests, five movies each, three movies per batch
    # ratings spread over ~2 points; llama.cpp keeps its KV cache in float16 (0.006 measured)
    assert np.ptp(expected(want)) > 1
    assert np.abs(expected(got) - expected(want)).max() < 0.02
    assert np.corrcoef(expected(got), expected(want))[0, 1] > 0.999
    lcpp.batch_size = 1   # one movie per batch, then no prefix reuse: the same answers
    one = lcpp.rate(prompts[::-1])[::-1]
    lcpp.prefix_reuse = False
    whole = lcpp.rate(prompts)
    lcpp.batch_size, lcpp.prefix_reuse = 3, True
    assert np.abs(expected(one) - expected(got)).max() < 0.01
    assert np.abs(expected(whole) - expected(got)).max() < 0.01  # float16 KV, other kernels


@pytest.mark.slow
def test_greedy_text_equals_hf(tiny_pair):
    hf, lcpp = tiny_pair
    from ctrlrec.llm.prompts import Chat

    texts = [hf.render(Chat("You are terse.", f"Name a {g} film.")) for g in ("crime", "comedy")]
    assert lcpp.generate(texts, max_new_tokens=8) == hf.generate(texts, max_new_tokens=8)
    a = lcpp.generate(texts[:1], max_new_tokens=8, temperature=1.0, seed=3)
    assert a == lcpp.generate(texts, max_new_tokens=8, temperature=1.0, seed=3)[:1]


@pytest.mark.slow
def test_a_pool_worker_on_llamacpp_never_imports_torch(tiny_pair):
    """An LLM pool worker (bench/llmpool.py) serving llama.cpp, in a fresh process as Ray starts
    one: the same ratings as in this process, and torch never imported there (its tokenizer is
    read from tokenizer.json, and torch's thread count is set only for engines that use it)."""
    import json
    import subprocess
    import sys

    hf, lcpp = tiny_pair
    prompts = rating_prompts(hf, RATING_REQUESTS[:2], RATING_ITEMS[:3])
    code = ("import json, sys\n"
            "from bench.llmpool import LLMWorker\n"
            "from ctrlrec.llm.backends import RatePrompt\n"
            "model, options, pieces = json.loads(sys.stdin.read())\n"
            "worker = LLMWorker('llamacpp', model, options, 1)\n"
            "answers, _, _ = worker.run('rate', [RatePrompt(*p) for p in pieces], {})\n"
            "print(json.dumps({'expected': [a.expected for a in answers],\n"
            "                  'torch': 'torch' in sys.modules}))\n")
    options = {"batch_size": 3, "threads": 1, "n_ctx": 1024}
    # the GGUF's tokenizer folder exists already (the fixture's backend wrote it)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       input=json.dumps([lcpp.identity["model"], options,
                                         [[q.prefix, q.suffix] for q in prompts]]))
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["torch"] is False
    assert out["expected"] == [r.expected for r in lcpp.rate(prompts)]


@pytest.mark.slow
def test_identity_names_the_engine_and_the_file(tiny_pair):
    _, lcpp = tiny_pair
    assert lcpp.identity["backend"] == "llamacpp" and lcpp.identity["dtype"] == "gguf"
    assert len(lcpp.identity["revision"]) == 16


@pytest.mark.slow
def test_a_stage_reaches_a_gguf_file_by_its_path(tiny_pair, tmp_path):
    """`model: /path/x.gguf` in a suite: the stage renders prompts with the tokenizer read from
    the file (there is no model folder), keys answers by the file's own revision (another file
    at the same path is another model), and its cached answers are the backend's."""
    from bench.stages.llm import open_llm
    from ctrlrec.llm.backends import render
    from ctrlrec.llm.prompts import rating_chat

    hf, lcpp = tiny_pair
    llm = {"backend": "llamacpp", "model": lcpp.identity["model"], "dtype": "gguf",
           "batch_size": 3, "threads": 1, "n_ctx": 1024}
    cached, tok = open_llm(llm, {"llm_cache": tmp_path / "answers.sqlite"})
    assert cached.identity["revision"] == lcpp.identity["revision"]
    chat = rating_chat(RATING_REQUESTS[0])
    assert render(tok, chat) == hf.render(chat)
    prompts = rating_prompts(hf, RATING_REQUESTS[:1], RATING_ITEMS[:4])
    assert expected(cached.rate(prompts)).tolist() == expected(lcpp.rate(prompts)).tolist()
    assert cached.calls == 4


@pytest.mark.slow
def test_a_pool_worker_records_the_batch_llamacpp_really_runs(tiny_pair):
    """llama.cpp fixes its parallel sequences when it loads, for the first stage's batch; a later
    stage of the same pool that asks for a larger one gets, and records, the loaded one."""
    from bench.llmpool import LLMWorker

    hf, lcpp = tiny_pair
    worker = LLMWorker("llamacpp", lcpp.identity["model"], {"batch_size": 2, "threads": 1,
                                                             "n_ctx": 1024}, threads=1)
    prompts = rating_prompts(hf, RATING_REQUESTS[:1], RATING_ITEMS[:5])
    try:
        answers, settings, _ = worker.run("rate", prompts, {}, batch_size=8)
        assert settings["batch_size"] == worker.backend.batch_size == 2
        assert np.abs(expected(answers) - expected(lcpp.rate(prompts))).max() < 0.01
    finally:
        worker.backend.close()


def test_a_suite_names_a_gguf_or_a_packaged_model():
    from bench.checks import preflight
    from bench.suitefile import SuiteError, load_suite

    over = ["methods.1.llm.backend=llamacpp", "methods.1.llm.model=some/hub-model"]
    with pytest.raises(SuiteError, match=r"s\.yaml: .*model: 'some/hub-model': the llamacpp"):
        preflight(load_suite("suites/genre.yaml", over), "s.yaml")


def test_repack_is_a_llamacpp_setting_and_part_of_its_keys():
    from bench.plan import llm_key
    from bench.suitefile import SuiteError, load_suite

    def llm(*over):
        return load_suite("suites/genre.yaml", ["methods.1.llm.backend=llamacpp", *over]
                          ).methods[1].llm

    off, on = llm(), llm("methods.1.llm.repack=true")
    assert off.repack is False and llm_key(off)["repack"] is False
    assert llm_key(on) == {**llm_key(off), "repack": True}  # other kernels, other answers
    with pytest.raises(SuiteError, match="repack is not a setting of the hf backend"):
        load_suite("suites/genre.yaml", ["methods.1.llm.backend=hf", "methods.1.llm.repack=true"])


def test_repack_is_refused_where_llamacpp_was_built_with_amx(monkeypatch):
    """On an AMX CPU the native build's AMX kernels took the repacked Q4_K weights and the
    process died in the first batch: one line instead, before any model loads."""
    import llama_cpp

    from ctrlrec.llm.llamacpp_backend import LlamaCppBackend

    monkeypatch.setattr(llama_cpp, "llama_print_system_info",
                        lambda: b"CPU : AVX512 = 1 | AVX512_BF16 = 1 | AMX_INT8 = 1 |")
    with pytest.raises(ValueError, match=r"^llamacpp option repack: true: .* AMX_INT8 .*"
                                         r"allowed on this CPU: repack: false$"):
        LlamaCppBackend("no-such-model.gguf", repack=True)


@pytest.mark.slow
def test_ceiling_script_counts_the_tokens_rating_computes(tiny_pair):
    """scripts/llamacpp_ceiling.py on the tiny GGUF: every request's prefix once plus every
    movie's suffix, a positive plain rate, and the backend rates as before afterwards."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parent.parent / "scripts" / "llamacpp_ceiling.py"
    spec = importlib.util.spec_from_file_location("llamacpp_ceiling", path)
    ceiling = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ceiling)
    hf, lcpp = tiny_pair
    prompts = rating_prompts(hf, RATING_REQUESTS[:2], RATING_ITEMS[:4])
    before = expected(lcpp.rate(prompts))
    out = ceiling.measure(lcpp, prompts, repeats=1, seq=64)
    want = (sum(len(lcpp._ids(p)) for p in {p.prefix for p in prompts})
            + sum(len(lcpp._ids(p.suffix)) for p in prompts))
    assert out["prompts"] == 8 and out["requests"] == 2 and out["tokens_computed"] == want
    assert out["plain_sequences"] >= 1 and out["plain_tokens_per_second"] > 0
    assert out["rating_share_of_plain"] > 0
    assert np.array_equal(expected(lcpp.rate(prompts)), before)


@pytest.mark.slow
def test_top_logprobs_of_whole_prompts_give_the_ratings_of_rate(tiny_pair):
    """`bench serve` gets whole prompts and finds their shared prefix from the tokens: the
    log-probabilities it returns give exactly the ratings `rate` computes from (prefix,
    item) pairs, with the same batches, and the same ones with nothing shared."""
    hf, lcpp = tiny_pair
    prompts = rating_prompts(hf, RATING_REQUESTS[:2], RATING_ITEMS)  # 2 prefixes x 4 items
    rated = lambda tops: expected_from_top(tops, lcpp.n_vocab, lcpp.digit_ids)  # noqa: E731

    texts = [p.text for p in prompts]
    shared = rated(lcpp.top_logprobs(texts, lcpp.n_vocab))
    assert np.array_equal(shared, expected(lcpp.rate(prompts)))
    top5 = lcpp.top_logprobs(texts, 5)
    assert [len(t) for t in top5] == [5] * 8 and all(
        t[0][1] >= t[-1][1] for t in top5)  # most likely first
    lcpp.prefix_reuse = False
    try:
        alone = rated(lcpp.top_logprobs(texts, lcpp.n_vocab))
        assert np.array_equal(alone, expected(lcpp.rate(prompts)))
    finally:
        lcpp.prefix_reuse = True
    assert np.abs(alone - shared).max() < 0.01  # float16 KV cache, other batches


@pytest.mark.slow
def test_bench_serve_on_llamacpp_answers_the_official_openai_client(tiny_pair):
    """`bench serve --backend llamacpp`: the official client reads the engine's own top
    log-probabilities and greedy text over a real socket."""
    import threading

    import openai  # the dev extra installs it

    from bench.serve import make_server

    hf, lcpp = tiny_pair
    srv = make_server(lcpp, "127.0.0.1", 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{srv.server_address[1]}/v1",
                               api_key="unused", max_retries=0, timeout=120)
        assert [m.id for m in client.models.list()] == [lcpp.identity["model"]]
        texts = [p.text for p in rating_prompts(hf, RATING_REQUESTS[:1], RATING_ITEMS[:3])]
        reply = client.completions.create(model="m", prompt=texts, logprobs=5, max_tokens=1)
        for want, choice in zip(lcpp.top_logprobs(texts, 5),
                                sorted(reply.choices, key=lambda c: c.index)):
            got = choice.logprobs.top_logprobs[0]
            assert got == pytest.approx({lcpp.tokenizer.decode([t]): lp for t, lp in want})
        reply = client.completions.create(model="m", prompt=texts[:1], max_tokens=4)
        assert reply.choices[0].text == lcpp.generate(texts[:1], max_new_tokens=4)[0]
    finally:
        srv.shutdown()


def test_bench_serve_picks_the_engine_auto_picks(monkeypatch):
    from bench import serve

    monkeypatch.setattr("ctrlrec.hardware.default_device", lambda: "cpu")
    monkeypatch.setattr("ctrlrec.hardware.cpu_amx", lambda: False)
    assert serve.serve_backend("auto", "qwen2.5-coder-1.5b-instruct") == "llamacpp"
    assert serve.serve_backend("auto", "/some/model.gguf") == "llamacpp"
    assert serve.serve_backend("auto", "/some/hf-folder") == "hf"  # vllm has `vllm serve`
    assert serve.serve_backend("hf", "qwen2.5-coder-1.5b-instruct") == "hf"
    monkeypatch.setattr("ctrlrec.hardware.cpu_amx", lambda: True)  # hf in bf16 is faster there
    assert serve.serve_backend("auto", "qwen2.5-coder-1.5b-instruct") == "hf"
    assert serve.serve_backend("auto", "/some/model.gguf") == "llamacpp"
    monkeypatch.setattr("ctrlrec.hardware.default_device", lambda: "cuda")
    assert serve.serve_backend("auto", "qwen2.5-coder-1.5b-instruct") == "hf"


@pytest.mark.slow
def test_a_prefix_still_held_is_not_decoded_again(tiny_pair):
    """A request's prompts in two calls, as a server's client sends them: the second call finds
    the prefix in sequence 0 and decodes only its movies, with the answers of one call over the
    same batches; after anything else was decoded the prefix is decoded again."""
    hf, lcpp = tiny_pair
    lc = lcpp.lc
    prompts = rating_prompts(hf, RATING_REQUESTS[:1], RATING_ITEMS)  # 4 movies; batches of 3
    prefix, last = len(lcpp._ids(prompts[0].prefix)), len(lcpp._ids(prompts[3].suffix))

    def decoded(*calls):
        lc.llama_perf_context_reset(lcpp._ctx)
        out = [call() for call in calls]
        return lc.llama_perf_context(lcpp._ctx).n_p_eval, out  # tokens of batches decoded

    whole = expected(lcpp.rate(prompts))
    lcpp.rate(prompts[:3])
    n, (second,) = decoded(lambda: lcpp.rate(prompts[3:]))
    assert n == last and np.array_equal(np.concatenate([whole[:3], expected(second)]), whole)
    lcpp.generate(["Hello"], max_new_tokens=2)  # sequence 0 now holds other tokens
    n, _ = decoded(lambda: lcpp.rate(prompts[3:]))
    assert n == prefix + last
