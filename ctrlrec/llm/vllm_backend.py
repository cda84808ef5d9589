"""The `vllm` backend: an in-process vLLM engine (one per GPU, inside a Ray task or actor), with
prefix caching on, so the request prefix of a rating prompt is computed once per request.

Needs the GPU extra (`pip install .[gpu]`): vLLM pins its own torch and transformers, so it lives
in a GPU environment, not the CPU one. Not exercised by the CPU test suite."""

from __future__ import annotations

import numpy as np

from .backends import RatePrompt, Rating, digit_token_ids, rating_from_logprobs


class VLLMBackend:
    name = "vllm"

    def __init__(self, model: str, dtype: str = "bfloat16", batch_size: int = 256,
                 gpu_memory_utilization: float = 0.85, tensor_parallel_size: int = 1,
                 max_model_len: int | None = 4096, top_logprobs: int = 20, **_ignored):
        from vllm import LLM

        from .backends import model_revision
        from .models import resolve_llm

        path = resolve_llm(model)
        self.engine = LLM(model=path, dtype=dtype, enable_prefix_caching=True,
                          gpu_memory_utilization=gpu_memory_utilization,
                          tensor_parallel_size=tensor_parallel_size, max_model_len=max_model_len)
        self.tokenizer = self.engine.get_tokenizer()
        self.digit_ids = digit_token_ids(self.tokenizer)
        self.batch_size = batch_size
        self.top_n = top_logprobs
        self.identity = {"backend": self.name, "model": model, "revision": model_revision(path),
                         "dtype": dtype}
        self.settings = {**self.identity, "batch_size": batch_size,
                         "tensor_parallel_size": tensor_parallel_size, "prefix_caching": True}

    def rate(self, prompts: list[RatePrompt]) -> list[Rating]:
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=1, temperature=0.0, logprobs=self.top_n)
        out = []
        for lo in range(0, len(prompts), self.batch_size):
            texts = [p.text for p in prompts[lo:lo + self.batch_size]]
            for res in self.engine.generate(texts, params, use_tqdm=False):
                top = res.outputs[0].logprobs[0]  # {token id: Logprob} at the answer position
                lp = np.array([np.logaddexp.reduce([top[i].logprob if i in top else -np.inf
                                                    for i in ids]) for ids in self.digit_ids])
                out.append(rating_from_logprobs(lp))
        return out

    def generate(self, texts: list[str], max_new_tokens: int = 64, temperature: float = 0.0,
                 seed: int = 0) -> list[str]:
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=max_new_tokens, temperature=temperature, seed=seed)
        return [r.outputs[0].text for r in self.engine.generate(texts, params, use_tqdm=False)]
