"""The `llamacpp` backend: llama.cpp (through llama-cpp-python) running a GGUF file directly.

For the packaged models that is the Q4_K_M file they ship as, so it needs neither the 3.5 GB
dequantised folder nor torch's matmuls, whose bf16 path is slow on CPUs without native bf16.
Prompts are rendered and tokenised by the model's own transformers tokenizer, as in every
backend, and llama.cpp receives token ids.

Rating: a request's prefix is decoded once as sequence 0; for each chunk of up to `batch_size`
movies the prefix is shared with sequences 1..n (in the unified KV cache a copy shares the cells,
it computes nothing), all suffixes are decoded in one batch, the logits at each suffix's last
token give the rating, and the suffix sequences are dropped again."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from .backends import (RatePrompt, Rating, answer_by_group, digit_token_ids, llm_identity,
                       prefix_groups, ratings_from_logprobs, shared_prefix_groups, text_hash)
from .backends import render as render_chat


def gguf_file(model: str) -> Path:
    """A packaged alias -> its GGUF (assembled on first use); else a path to a .gguf file."""
    from .models import PACKAGED_LLMS, ensure_gguf, is_gguf_model

    if model in PACKAGED_LLMS:
        return ensure_gguf(model)
    if is_gguf_model(model) and Path(model).expanduser().is_file():
        return Path(model).expanduser()
    raise ValueError(f"the llamacpp backend runs GGUF files: model {model!r} is neither a "
                     f"packaged alias ({', '.join(PACKAGED_LLMS)}) nor a .gguf file")


class LlamaCppBackend:
    name = "llamacpp"

    def __init__(self, model: str, batch_size: int = 32, threads: int | None = None,
                 n_ctx: int = 4096, prefix_reuse: bool = True, repack: bool = False):
        import llama_cpp as lc
        from .backends import template_tokenizer
        from .models import gguf_tokenizer
        from .revision import model_revision

        # llama.cpp logs every load step to stderr unless its logger says otherwise; quiet it
        # only where nobody has configured that logger
        log = logging.getLogger("llama-cpp-python")
        if log.level == logging.NOTSET:
            log.setLevel(logging.ERROR)
        self.lc = lc
        if repack and "AMX_INT8 = 1" in lc.llama_print_system_info().decode():
            # repacking hands Q4_K weights to llama.cpp's AMX kernels, which crashed the process
            # (general protection fault in libggml-cpu, first batch) on a 2-core AMX Xeon;
            # upstream: ggml-org/llama.cpp#20824
            raise ValueError(f"llamacpp option repack: true: llama-cpp-python {lc.__version__} "
                             "built with AMX_INT8 crashes in its AMX kernels on the first batch; "
                             "allowed on this CPU: repack: false")
        path = gguf_file(model)
        revision = model_revision(str(path))
        # the folder's tokenizer.json without AutoTokenizer, which would import torch into a
        # process that computes nothing with it (same ids: scripts/tokenizer_agreement.py)
        self.tokenizer = template_tokenizer(gguf_tokenizer(path, revision))
        self.digit_ids = digit_token_ids(self.tokenizer)
        self.prefix_reuse = prefix_reuse
        lc.llama_backend_init()
        mparams = lc.llama_model_default_params()
        # llama.cpp repacks quantised weights into interleaved layouts for its own CPU kernels
        # by default; for the packaged Q4_K_M those rated slower than the plain layout
        # (results/engines/README.md), so it is off unless asked for
        mparams.use_extra_bufts = repack
        self._model = lc.llama_model_load_from_file(str(path).encode(), mparams)
        if not self._model:
            raise RuntimeError(f"llama.cpp could not load {path}")
        cparams = lc.llama_context_default_params()
        # sequence 0 holds a prefix, 1..batch_size its movies; a unified cache lets them share it
        cparams.n_seq_max = min(batch_size + 1, lc.llama_max_parallel_sequences())
        cparams.kv_unified = True
        cparams.n_ctx = n_ctx
        cparams.n_batch = cparams.n_ubatch = min(n_ctx, 1024)
        # llama.cpp's own default is 4 threads whatever the machine: on 2 cores that
        # oversubscribes them, so default to the cores this process may run on
        threads = threads or len(os.sched_getaffinity(0))
        cparams.n_threads = cparams.n_threads_batch = threads
        self._ctx = lc.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            raise RuntimeError(f"llama.cpp could not make a context for {path}")
        self.max_movies = cparams.n_seq_max - 1
        self.batch_size = batch_size
        self.n_ctx, self.n_batch = lc.llama_n_ctx(self._ctx), cparams.n_batch
        self._mem = lc.llama_get_memory(self._ctx)
        self._held: list[int] | None = None  # the prefix that sequence 0 holds, if any
        vocab = lc.llama_model_get_vocab(self._model)
        self.n_vocab = lc.llama_vocab_n_tokens(vocab)
        self._vocab = vocab
        self._batch = lc.llama_batch_init(self.n_batch, 0, cparams.n_seq_max)
        self.threads = cparams.n_threads
        # llama.cpp computes with the file's own quantised weights: that is the "dtype"
        self.identity = llm_identity(self.name, model, "gguf", revision)
        self.settings = {**self.identity, "device": "cpu", "batch_size": self.batch_size,
                         "prefix_reuse": prefix_reuse, "threads": self.threads, "n_ctx": n_ctx,
                         "repack": repack,
                         "llama_cpp_python": lc.__version__,
                         # the instruction sets this build uses (it is compiled per machine)
                         "system_info": lc.llama_print_system_info().decode().strip()}

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @batch_size.setter
    def batch_size(self, n: int) -> None:
        # its parallel sequences are fixed at load: a caller (a later stage of the same LLM
        # pool) may lower the batch, not raise it past them
        self._batch_size = min(n, self.max_movies)

    def close(self):
        lc = self.lc
        if getattr(self, "_batch", None) is not None:
            lc.llama_batch_free(self._batch)
            self._batch = None
        if getattr(self, "_ctx", None):
            lc.llama_free(self._ctx)
            self._ctx = None
        if getattr(self, "_model", None):
            lc.llama_model_free(self._model)
            self._model = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def render(self, chat):
        return render_chat(self.tokenizer, chat)

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    # ---- decoding
    def _decode(self, seqs: list[tuple[int, int, list[int]]]) -> list[np.ndarray]:
        """Decode (sequence id, first position, tokens) in one llama.cpp batch; the next-token
        logits after each sequence's last token, in order."""
        if sum(len(t) for _, _, t in seqs) > self.n_batch:  # the batch's arrays hold n_batch
            raise ValueError(f"more than {self.n_batch} tokens in one llama.cpp batch: a movie "
                             f"text this long needs prefix_reuse: false")
        b = self._batch
        n = 0
        last = []
        for seq, pos, toks in seqs:
            for i, t in enumerate(toks):
                b.token[n], b.pos[n], b.n_seq_id[n] = t, pos + i, 1
                b.seq_id[n][0] = seq
                b.logits[n] = i == len(toks) - 1
                n += 1
            last.append(n - 1)
        b.n_tokens = n
        rc = self.lc.llama_decode(self._ctx, b)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc} for {n} tokens")
        return [np.ctypeslib.as_array(self.lc.llama_get_logits_ith(self._ctx, i),
                                      shape=(self.n_vocab,)).copy() for i in last]

    def _feed(self, seq: int, pos: int, toks: list[int]) -> np.ndarray:
        """Decode a long run of tokens into one sequence, n_batch at a time; the last logits."""
        for lo in range(0, len(toks), self.n_batch):
            out = self._decode([(seq, pos + lo, toks[lo:lo + self.n_batch])])[0]
        return out

    def _check_length(self, n: int):
        if n > self.n_ctx:
            raise ValueError(f"a prompt of {n} tokens does not fit llama.cpp's context of "
                             f"{self.n_ctx} (setting n_ctx)")

    def _rating(self, logits: np.ndarray) -> Rating:
        from scipy.special import log_softmax

        logp = log_softmax(logits.astype(np.float64))[None]
        return ratings_from_logprobs(logp, self.digit_ids)[0]

    # ---- rating
    def rate(self, prompts: list[RatePrompt]) -> list[Rating]:
        if not self.prefix_reuse:
            return [self._rating(self._alone(self._ids(p.prefix) + self._ids(p.suffix)))
                    for p in prompts]
        return answer_by_group(len(prompts), prefix_groups(prompts), lambda prefix, idx: (
            self._over_prefix(self._ids(prefix), [self._ids(prompts[i].suffix) for i in idx],
                              self._rating)))

    def top_logprobs(self, texts: list[str], n: int = 20) -> list[list[tuple[int, float]]]:
        """The n most likely next tokens after each text, as (token id, logprob); for `bench
        serve`, whose clients send whole prompts: texts that begin with the same tokens (a
        request's prompts) share that prefix's computation, found from the token ids."""
        from scipy.special import log_softmax

        def top(logits):
            logp = log_softmax(logits.astype(np.float64))
            best = np.argsort(-logp, kind="stable")[:n]
            return [(int(t), float(logp[t])) for t in best]

        ids = [self._ids(t) for t in texts]
        if not self.prefix_reuse:
            return [top(self._alone(t)) for t in ids]
        return answer_by_group(len(texts), shared_prefix_groups(ids), lambda shared, idx: (
            self._over_prefix(ids[idx[0]][:shared], [ids[i][shared:] for i in idx], top)))

    def _alone(self, toks: list[int]) -> np.ndarray:
        """The next-token logits after one whole token sequence, nothing shared."""
        if not toks:
            raise ValueError("an empty prompt: there is no token to continue from")
        self._check_length(len(toks))
        self._clear()
        return self._feed(0, 0, toks)

    def _clear(self) -> None:
        self.lc.llama_memory_clear(self._mem, True)
        self._held = None

    def _over_prefix(self, pre: list[int], suffixes: list[list[int]], reduce) -> list:
        """`reduce(next-token logits)` after `pre` + each suffix: the prefix is decoded once as
        sequence 0, the suffixes in batches of up to `batch_size` sequences that share it. A
        prefix that sequence 0 still holds from the call before is not decoded again (a
        server's client sends a request's prompts in parts): its state is the same."""
        held = self.lc.llama_memory_seq_pos_max(self._mem, 0) == len(pre) - 1
        if not (pre and pre == self._held and held):
            self._clear()
            if pre:
                self._feed(0, 0, pre)
                self._held = list(pre)
        out: list = []
        chunk: list[list[int]] = []
        tokens = 0  # suffix tokens in the chunk: they fill one batch and sit beside the prefix
        per_batch = max(1, self.batch_size)
        room = min(self.n_batch, self.n_ctx - len(pre))
        for suffix in suffixes:
            self._check_length(len(pre) + len(suffix))
            if chunk and (len(chunk) == per_batch or tokens + len(suffix) > room):
                out += map(reduce, self._chunk_logits(chunk, len(pre)))
                chunk, tokens = [], 0
            chunk.append(suffix)
            tokens += len(suffix)
        if chunk:
            out += map(reduce, self._chunk_logits(chunk, len(pre)))
        return out

    def _chunk_logits(self, suffixes: list[list[int]], n_pre: int) -> list[np.ndarray]:
        lc = self.lc
        seqs = list(range(1, len(suffixes) + 1))
        for s in seqs:
            lc.llama_memory_seq_cp(self._mem, 0, s, -1, -1)
        try:
            return self._decode([(s, n_pre, t) for s, t in zip(seqs, suffixes, strict=True)])
        finally:  # also after a failed decode: the prefix in sequence 0 stays usable alone
            for s in seqs:
                lc.llama_memory_seq_rm(self._mem, s, -1, -1)

    # ---- generation
    def generate(self, texts: list[str], max_new_tokens: int = 64, temperature: float = 0.0,
                 seed: int = 0) -> list[str]:
        """One text at a time: greedy at temperature 0, else sampled from softmax(logits / T)
        with a generator seeded by `seed` and the text, so an answer does not depend on its
        neighbours in the call."""
        lc = self.lc
        out = []
        for text in texts:
            rng = np.random.default_rng([seed, text_hash(text)])
            toks = self._ids(text)
            self._check_length(len(toks) + max_new_tokens)
            self._clear()
            logits = self._feed(0, 0, toks)
            new: list[int] = []
            for _ in range(max_new_tokens):
                if temperature > 0:
                    z = logits.astype(np.float64) / temperature
                    p = np.exp(z - z.max())
                    t = int(rng.choice(len(p), p=p / p.sum()))
                else:
                    t = int(np.argmax(logits))
                if lc.llama_vocab_is_eog(self._vocab, t):
                    break
                new.append(t)
                logits = self._decode([(0, len(toks) + len(new) - 1, [t])])[0]
            out.append(self.tokenizer.decode(new, skip_special_tokens=True))
        return out

