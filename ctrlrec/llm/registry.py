"""The registry of LLM backends: name -> where its class lives and the typed options its
constructor takes. Backends are imported only when chosen, so torch or vLLM load only then; an
option a backend does not take is an error, never silently dropped."""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, ValidationError

from .backends import LLMBackend


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HFOptions(_Options):
    dtype: str = "auto"
    device: str | None = None
    batch_size: int = 32
    threads: int | None = None
    prefix_reuse: bool = True


class VLLMOptions(_Options):
    """None means the engine's default on a GPU and this project's CPU default on a CPU
    (ctrlrec.llm.vllm_backend: 32-token KV blocks, 4 GiB of KV cache, 512 tokens per engine
    step, eager execution)."""

    dtype: str = "auto"
    batch_size: int = 256
    gpu_memory_utilization: float = 0.85
    tensor_parallel_size: int = 1
    max_model_len: int | None = 4096
    top_logprobs: int = 20
    prefix_reuse: bool = True                   # vLLM's prefix caching
    threads: int | None = None                  # CPU: engine threads, one per core (None: all)
    block_size: int | None = None               # KV cache block, in tokens
    kv_cache_gib: float | None = None           # KV cache size (GPU default: its memory share)
    max_num_batched_tokens: int | None = None   # tokens per engine step
    enforce_eager: bool | None = None           # no torch.compile / CUDA graphs
    first_core: int = 0                         # CPU: the engine's threads bind from this core


class LlamaCppOptions(_Options):
    batch_size: int = 32          # movies of one request decoded together over its prefix
    threads: int | None = None    # llama.cpp threads (None: its default, the cores it finds)
    n_ctx: int = 4096             # KV cache cells, shared by a prefix and its batch of movies
    prefix_reuse: bool = True
    repack: bool = False          # llama.cpp's repacked CPU weight layouts (its default: on)


class OpenAIOptions(_Options):
    base_url: str = "http://127.0.0.1:8000/v1"
    api_key_env: str = "OPENAI_API_KEY"
    batch_size: int = 16
    timeout: float = 120
    retries: int = 3
    top_logprobs: int = 20


@dataclass(frozen=True)
class BackendEntry:
    path: str             # "module:Class", imported only when the backend is chosen
    options: type         # the typed options its constructor takes (unknown ones are an error)
    torch: bool = True    # computes with torch in the calling process (whose thread count the
    #                       LLM pool's worker sets); False: its own threads, or none at all


BACKENDS = {
    "hf": BackendEntry("ctrlrec.llm.backends:HFBackend", HFOptions),
    "vllm": BackendEntry("ctrlrec.llm.vllm_backend:VLLMBackend", VLLMOptions),
    "openai": BackendEntry("ctrlrec.llm.remote:OpenAIBackend", OpenAIOptions, torch=False),
    "llamacpp": BackendEntry("ctrlrec.llm.llamacpp_backend:LlamaCppBackend", LlamaCppOptions,
                             torch=False),
}
_LOADED: dict = {}


def backend_options(name: str, settings: dict) -> dict:
    """The subset of `settings` (a suite's LLM section, flattened) that backend `name` takes."""
    fields = BACKENDS[name].options.model_fields
    return {k: v for k, v in settings.items() if k in fields}


def load_backend(name: str, model: str, **options) -> LLMBackend:
    """A backend instance; one per process and configuration, so a worker that runs several LLM
    stages in turn loads the model once. Options are checked against the backend's own typed
    options: an unknown or mistyped one is an error, never silently dropped."""
    if name not in BACKENDS:
        raise ValueError(f"unknown LLM backend {name!r}; allowed: {', '.join(BACKENDS)}")
    entry = BACKENDS[name]
    try:
        opts = entry.options(**options).model_dump()
    except ValidationError as exc:
        e = exc.errors()[0]
        raise ValueError(f"{name} backend option {'.'.join(map(str, e['loc']))}: {e['msg']}; "
                         f"allowed: {', '.join(entry.options.model_fields)}") from None
    key = (name, model, json.dumps(opts, sort_keys=True, default=str))
    if key not in _LOADED or getattr(_LOADED[key], "closed", False):  # closed: its engine died
        module, cls = entry.path.split(":")
        _LOADED[key] = getattr(importlib.import_module(module), cls)(model, **opts)
    return _LOADED[key]
