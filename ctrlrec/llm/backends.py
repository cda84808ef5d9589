"""LLM backends behind one small interface.

    rate(prompts)        -> list of Rating(expected, mass, probs): the distribution over the
                            answer tokens "1".."5" at the position where the answer starts
    generate(texts, ...) -> list of strings

A prompt for `rate` is a RatePrompt(prefix, suffix) of already-rendered text; prompts that share a
prefix reuse its attention state where the backend can. Chat templates are applied by
`render()`, the same way for every backend, from the model's own tokenizer."""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from ..hardware import torch_threads
from .prompts import ITEM_SLOT, Chat

DIGITS = ("1", "2", "3", "4", "5")


@dataclass(frozen=True)
class RatePrompt:
    prefix: str
    suffix: str

    @property
    def text(self) -> str:
        return self.prefix + self.suffix


@dataclass(frozen=True)
class Rating:
    expected: float      # sum r * P(r) over r = 1..5, P renormalised over the five digits
    mass: float          # total probability of the five digit tokens before renormalising
    probs: tuple         # P(1)..P(5), renormalised

    def as_json(self):
        return {"expected": self.expected, "mass": self.mass, "probs": list(self.probs)}

    @classmethod
    def from_json(cls, d):
        return cls(d["expected"], d["mass"], tuple(d["probs"]))


def rating_from_logprobs(digit_logprobs: np.ndarray) -> Rating:
    """digit_logprobs: log P of each of the five digits (variants already summed)."""
    p = np.exp(np.asarray(digit_logprobs, dtype=np.float64))
    mass = float(p.sum())
    q = p / mass if mass > 0 else np.full(5, 0.2)
    return Rating(float((q * np.arange(1, 6)).sum()), mass, tuple(float(x) for x in q))


def ratings_from_logprobs(logp: np.ndarray, digit_ids: list[list[int]]) -> list[Rating]:
    """Rows of next-token log-probabilities -> one Rating each (the spellings of a digit summed)."""
    digit = np.stack([np.logaddexp.reduce(logp[:, ids], axis=1) for ids in digit_ids], axis=1)
    return [rating_from_logprobs(row) for row in digit]


def prefix_groups(prompts: list[RatePrompt]) -> list[tuple[str, list[int]]]:
    """Rating prompts grouped by their prefix text: (prefix, the members' indices)."""
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault(p.prefix, []).append(i)
    return list(groups.items())


def answer_by_group(n: int, groups, answer) -> list:
    """`answer(key, indices)` gives one answer per member of a group, in the members' order;
    the answers come back in the order of the n inputs."""
    out: list = [None] * n
    for key, idx in groups:
        for i, a in zip(idx, answer(key, idx), strict=True):
            out[i] = a
    return out


def shared_prefix_groups(ids: list[list[int]]) -> list[tuple[int, list[int]]]:
    """Token sequences grouped by a leading run they share: (its length, the members' indices).
    Sorted, a request's prompts stand together; the next sequence joins the current group when
    that computes fewer tokens than leaving it out: sharing its common run saves the newcomer
    that many tokens, and shortening the shared run costs every member the difference. Each
    member keeps at least one token of its own (its logits come from its last token). Members
    keep the order they came in: an engine's answers can move with a sequence's place in a batch
    (llama.cpp's by up to ~0.04 of an expected rating for the packaged Q4_K_M), so a client that
    sends what `rate` would batch gets `rate`'s answers."""
    groups: list[tuple[int, list[int]]] = []
    for i in sorted(range(len(ids)), key=lambda j: ids[j]):
        if groups:
            shared, members = groups[-1]
            head = ids[members[0]]
            common = 0
            while common < min(shared, len(ids[i])) and head[common] == ids[i][common]:
                common += 1
            if (shared - common) * len(members) < common:
                groups[-1] = (common, members + [i])
                continue
        groups.append((len(ids[i]), [i]))
    return [(max(0, min(shared, *(len(ids[j]) - 1 for j in members))), sorted(members))
            for shared, members in groups]


def digit_token_ids(tokenizer) -> list[list[int]]:
    """For each digit, every single-token spelling ("5", " 5", "▁5", ...) of it."""
    out = []
    for d in DIGITS:
        ids = set()
        for variant in (d, " " + d):
            enc = tokenizer.encode(variant, add_special_tokens=False)
            if len(enc) == 1:
                ids.add(enc[0])
        tok = tokenizer.convert_tokens_to_ids("▁" + d)
        if isinstance(tok, int) and tok != tokenizer.unk_token_id:
            ids.add(tok)
        if not ids:
            raise ValueError(f"the tokenizer has no single token for the digit {d}")
        out.append(sorted(ids))
    return out


def template_tokenizer(path: str | Path):
    """The model's tokenizer for processes that compute nothing with torch: stages that only
    render prompts, and the llama.cpp backend, which also encodes and decodes with it. A folder
    with tokenizer.json loads it into transformers' plain tokenizers-backed class: AutoTokenizer
    imports torch and the generation code for the model-specific class (a fresh process loading
    the packaged tokenizer: ~9 s of CPU and 654 MB that way, ~3 s and 287 MB this way, on a
    2-core AVX2 CPU). The rendered text is the same (tests/test_llm.py), and so are the ids and
    decoded text (scripts/tokenizer_agreement.py). Other folders, and hub ids, go through
    AutoTokenizer."""
    if (Path(path) / "tokenizer.json").is_file():
        from transformers import PreTrainedTokenizerFast
        return PreTrainedTokenizerFast.from_pretrained(path)
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(path)


def render(tokenizer, chat: Chat) -> str | RatePrompt:
    """Apply the model's chat template, ending where the answer starts. With ITEM_SLOT in the
    user message, return a RatePrompt split at the slot (the item text is filled in later)."""
    messages = [{"role": "system", "content": chat.system}, {"role": "user", "content": chat.user}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if ITEM_SLOT not in text:
        return text
    prefix, suffix = text.split(ITEM_SLOT)
    return RatePrompt(prefix, suffix)


def fill(template: RatePrompt, item: str) -> RatePrompt:
    return RatePrompt(template.prefix, item + template.suffix)


def text_hash(text: str) -> int:
    """64 bits of a text's sha256. A sampled answer's generator is seeded by the call's seed and
    this, so the answer depends neither on its place in the call nor on the other texts (a caller
    that asks again only the failed ones, with the next seed, gets new samples)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


class EngineDied(RuntimeError):
    """The engine behind a backend died during a call (e.g. the OOM killer took its process);
    the backend has closed itself (`closed`), and a fresh load serves again. The LLM pool's
    worker then drops it and the shard is asked again (bench/llmpool.py)."""


class LLMBackend(Protocol):
    """What every backend provides. `identity` holds what its answers depend on (it enters every
    cache key, via `llm_identity`); `settings` adds runtime details for manifests."""

    name: str
    identity: dict
    settings: dict
    batch_size: int  # prompts per forward pass or request; a caller may change it between calls

    def rate(self, prompts: list[RatePrompt]) -> list[Rating]: ...

    def generate(self, texts: list[str], max_new_tokens: int = 64, temperature: float = 0.0,
                 seed: int = 0) -> list[str]: ...


def llm_identity(backend: str, model: str, dtype: str, revision: str,
                 base_url: str | None = None) -> dict:
    """The one description of a model's identity, used by the answer cache and the manifest:
    backend, model name, revision fingerprint of its files, resolved dtype, and the server for
    remote backends (whose dtype is the server's own, recorded as 'auto')."""
    out = {"backend": backend, "model": model, "dtype": dtype, "revision": revision}
    if base_url:
        out["base_url"] = base_url.rstrip("/")
    return out


class HFBackend:
    """transformers on CPU or GPU; shared prefixes are run once and their KV cache repeated."""

    name = "hf"

    def __init__(self, model: str, dtype: str = "auto", device: str | None = None,
                 batch_size: int = 32, threads: int | None = None, prefix_reuse: bool = True):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from ..hardware import default_device, resolve_dtype
        from .models import resolve_llm
        from .revision import model_revision

        path = resolve_llm(model)
        device = device or default_device()
        dtype = resolve_dtype(dtype, device)
        self.threads = threads  # torch threads while this model computes (None: the process's)
        # The packaged folder holds bf16 weights; float32 upcasts them exactly on load.
        with torch_threads(threads):
            loaded = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
        self._setup(loaded.to(device).eval(), AutoTokenizer.from_pretrained(path), device,
                    batch_size, prefix_reuse,
                    llm_identity(self.name, model, dtype, model_revision(path)))

    @classmethod
    def from_objects(cls, model, tokenizer, name: str, batch_size: int = 32,
                     prefix_reuse: bool = True) -> "HFBackend":
        """Wrap an already-built transformers model (e.g. random weights for throughput runs)."""
        self = cls.__new__(cls)
        self.threads = None
        device = str(next(model.parameters()).device)
        self._setup(model.eval(), tokenizer, device, batch_size, prefix_reuse,
                    llm_identity(cls.name, name,
                                 str(next(model.parameters()).dtype).removeprefix("torch."),
                                 "in-memory"))
        return self

    def _setup(self, model, tokenizer, device, batch_size, prefix_reuse, identity):
        import torch

        self.torch = torch
        self.model, self.tokenizer, self.device = model, tokenizer, device
        self.batch_size = batch_size
        self.prefix_reuse = prefix_reuse
        self.digit_ids = digit_token_ids(self.tokenizer)
        # transformers 5.x renamed `past_key_values` to `cache`; accept either.
        import inspect
        params = inspect.signature(self.model.base_model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self.identity = identity
        self.settings = {**self.identity, "device": self.device, "batch_size": batch_size,
                         "prefix_reuse": prefix_reuse,
                         "threads": self.threads or torch.get_num_threads()}

    def render(self, chat: Chat):
        return render(self.tokenizer, chat)

    # ---- rating
    def rate(self, prompts: list[RatePrompt]) -> list[Rating]:
        with torch_threads(self.threads):
            return self._rate(prompts)

    def _rate(self, prompts: list[RatePrompt]) -> list[Rating]:
        if not self.prefix_reuse:
            return self._ratings([], [self._ids(p.prefix) + self._ids(p.suffix) for p in prompts])
        return answer_by_group(len(prompts), prefix_groups(prompts), lambda prefix, idx: (
            self._ratings(self._ids(prefix), [self._ids(prompts[i].suffix) for i in idx])))

    def _ratings(self, pre_ids: list[int], suffixes: list[list[int]]) -> list[Rating]:
        return [r for logp in self._over_prefix(pre_ids, suffixes)
                for r in ratings_from_logprobs(logp.cpu().numpy(), self.digit_ids)]

    def _over_prefix(self, pre_ids: list[int], suffixes: list[list[int]]):
        """Next-token log-probabilities after `pre_ids` + each suffix, one batch of up to
        `batch_size` suffixes at a time: the prefix runs once and its KV cache is repeated for
        each batch (no prefix: the suffixes are whole sequences)."""
        pre_cache = None
        if pre_ids:
            with self.torch.no_grad():
                pre = self.model.base_model(
                    input_ids=self.torch.tensor([pre_ids], device=self.device), use_cache=True)
            pre_cache = getattr(pre, "cache", None) or pre.past_key_values
        for lo in range(0, len(suffixes), self.batch_size):
            yield self._last_logprobs(suffixes[lo:lo + self.batch_size], pre_cache, len(pre_ids))

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def _last_logprobs(self, seqs: list[list[int]], prefix_cache=None, prefix_len: int = 0):
        """Log-probabilities of the next token after each sequence (right-padded batch; the LM head
        runs on each row's last real position only)."""
        torch = self.torch
        n, width = len(seqs), max(len(s) for s in seqs)
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.full((n, width), pad, dtype=torch.long)
        mask = torch.zeros((n, prefix_len + width), dtype=torch.long)
        mask[:, :prefix_len] = 1
        for r, s in enumerate(seqs):
            ids[r, :len(s)] = torch.tensor(s)
            mask[r, prefix_len:prefix_len + len(s)] = 1
        kwargs = {"use_cache": prefix_cache is not None}
        if prefix_cache is not None:
            cache = copy.deepcopy(prefix_cache)
            cache.batch_repeat_interleave(n)
            kwargs[self._cache_kw] = cache
        with torch.no_grad():
            hidden = self.model.base_model(input_ids=ids.to(self.device),
                                           attention_mask=mask.to(self.device), **kwargs)[0]
            last = torch.tensor([len(s) - 1 for s in seqs], device=self.device)
            h = hidden[torch.arange(n, device=self.device), last]
            return torch.log_softmax(self.model.get_output_embeddings()(h).float(), dim=-1)

    def top_logprobs(self, texts: list[str], n: int = 20) -> list[list[tuple[int, float]]]:
        """The n most likely next tokens after each text, as (token id, logprob); for `bench
        serve`, whose clients send whole prompts: texts that begin with the same tokens (a
        request's prompts) share that prefix's computation, found from the token ids."""
        ids = [self._ids(t) for t in texts]
        groups = shared_prefix_groups(ids) if self.prefix_reuse else [(0, list(range(len(ids))))]

        def top(shared, idx):
            logp = self.torch.cat(list(self._over_prefix(ids[idx[0]][:shared],
                                                         [ids[i][shared:] for i in idx])))
            best = self.torch.topk(logp, n, dim=-1)
            return [list(zip(t.tolist(), v.tolist())) for v, t in zip(best.values, best.indices)]

        with torch_threads(self.threads):
            return answer_by_group(len(texts), groups, top)

    # ---- generation
    def generate(self, texts: list[str], max_new_tokens: int = 64, temperature: float = 0.0,
                 seed: int = 0) -> list[str]:
        with torch_threads(self.threads):
            return self._generate(texts, max_new_tokens, temperature, seed)

    def _generate(self, texts: list[str], max_new_tokens: int, temperature: float,
                  seed: int) -> list[str]:
        torch = self.torch
        torch.manual_seed(seed)
        tok = self.tokenizer
        tok.padding_side = "left"
        out = []
        for lo in range(0, len(texts), self.batch_size):
            batch = tok(texts[lo:lo + self.batch_size], return_tensors="pt", padding=True,
                        add_special_tokens=False).to(self.device)
            with torch.no_grad():
                gen = self.model.generate(**batch, max_new_tokens=max_new_tokens,
                                          do_sample=temperature > 0,
                                          temperature=temperature if temperature > 0 else None,
                                          top_p=None, top_k=None,
                                          pad_token_id=tok.pad_token_id or tok.eos_token_id)
            out += tok.batch_decode(gen[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
        return out
