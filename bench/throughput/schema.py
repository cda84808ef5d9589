"""The throughput suite as a pydantic model: closed keys, frozen, errors in one line.

Imported only where pydantic is installed (config.validate reads suites without it elsewhere)."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, StrictFloat, StrictInt, ValidationError, field_validator, \
    model_validator
from pydantic_core import PydanticCustomError

from ctrlrec.hardware import DTYPES

from ..suite import Strict
from ..suitefile import _one_line
from .config import DEFAULTS, METHOD_DEFAULTS, PATH_DEFAULTS, ThroughputError
from .models import ENCODER_ARCHS, LLM_ARCHS

Count = Annotated[int, Field(strict=True, ge=1)]  # neither true nor 10.0 is a count
# Kept as written, so that a budget of 120 is reported as 120 s, not 120.0 s.
Positive = Annotated[StrictFloat | StrictInt, Field(gt=0)]


class _Path(Strict):
    archs: ClassVar[dict]

    method: str
    dtype: Literal[DTYPES] = PATH_DEFAULTS["dtype"]  # auto: resolved per device when measured
    budget_s: Positive = PATH_DEFAULTS["budget_s"]
    device: str | None = PATH_DEFAULTS["device"]     # None: cuda where there is a GPU
    model: str | None = None        # real weights: packaged alias, folder or hub id; or
    random_arch: str | None = None  # random weights of one of `archs`' shapes, which needs
    tokenizer: str | None = None    # a tokenizer (packaged alias or folder)

    @field_validator("device")
    @classmethod
    def _device(cls, v):
        if v is not None and not v.startswith(("cpu", "cuda")):
            raise ValueError("allowed: cpu, cuda, cuda:N (default: cuda where there is a GPU)")
        return v

    @model_validator(mode="after")
    def _weights(self):
        if (self.model is None) == (self.random_arch is None):
            raise ValueError("give exactly one of model (real weights) or random_arch "
                             f"({', '.join(self.archs)})")
        if self.random_arch is not None and self.tokenizer is None:
            raise ValueError("a random_arch needs a tokenizer (packaged alias or folder)")
        return self

    def as_config(self) -> dict:
        """As measurements.json records a path: weights keys only where given."""
        unset = {k for k in ("model", "random_arch", "tokenizer") if getattr(self, k) is None}
        return self.model_dump(exclude=unset)


class DirectPath(_Path):
    archs = LLM_ARCHS

    method: Literal["direct"]
    random_arch: Literal[tuple(LLM_ARCHS)] | None = None
    backend: Literal["hf"] = METHOD_DEFAULTS["direct"]["backend"]  # the one measured in-process
    batch_size: Count = METHOD_DEFAULTS["direct"]["batch_size"]


class DistilledPath(_Path):
    archs = ENCODER_ARCHS

    method: Literal["distilled"]
    random_arch: Literal[tuple(ENCODER_ARCHS)] | None = None
    max_item_matrix_gib: Positive = METHOD_DEFAULTS["distilled"]["max_item_matrix_gib"]
    encode_batch: Count = METHOD_DEFAULTS["distilled"]["encode_batch"]
    score_buffer_mib: Count = METHOD_DEFAULTS["distilled"]["score_buffer_mib"]


PATHS = {"direct": DirectPath, "distilled": DistilledPath}


class ThroughputSuite(Strict):
    name: str
    description: str = DEFAULTS["description"]
    seed: Annotated[int, Field(strict=True, ge=0)] = DEFAULTS["seed"]
    top_k: Count = DEFAULTS["top_k"]
    threads: Count | None = DEFAULTS["threads"]
    item_texts: str = DEFAULTS["item_texts"]  # movielens, or a text file of one item per line
    items: Annotated[list[Count], Field(min_length=1)]
    requests: Annotated[list[Count], Field(min_length=1)]
    paths: Annotated[list[Annotated[DirectPath | DistilledPath, Field(discriminator="method")]],
                     Field(min_length=1)]

    @field_validator("items", "requests")
    @classmethod
    def _ascending(cls, v: list[int]) -> list[int]:
        return sorted(set(v))

    def as_config(self) -> dict:
        return {**self.model_dump(exclude={"paths"}), "paths": [p.as_config() for p in self.paths]}


def validate(raw, where: str) -> dict:
    try:
        return ThroughputSuite.model_validate(raw).as_config()
    except ValidationError as err:
        raise ThroughputError(_one_line(where, _readable(err), raw)) from None


def _readable(err: ValidationError) -> ValidationError:
    """The errors as suitefile._one_line words them, once three things only this schema has are
    put its way: a path's method tag is dropped from locations (paths[0].dtype, not
    paths[0].direct.dtype), a bad or missing method is an error of the key `method`, and an
    unknown key lists this schema's keys (_one_line would list a benchmark suite's)."""
    out = []
    for e in err.errors():
        loc, value, kind, ctx = e["loc"], e["input"], e["type"], e.get("ctx")
        model = ThroughputSuite
        if loc[:1] == ("paths",) and len(loc) > 2:
            model, loc = PATHS[loc[2]], loc[:2] + loc[3:]
        if kind in ("union_tag_invalid", "union_tag_not_found"):
            loc, value, ctx = loc + ("method",), value.get("method"), None
            kind = PydanticCustomError("method", "allowed: {allowed}",
                                       {"allowed": ", ".join(PATHS)})
        elif kind == "extra_forbidden":
            kind = PydanticCustomError("unknown_key", "unknown key; allowed: {allowed}",
                                       {"allowed": ", ".join(model.model_fields)})
        out.append({"type": kind, "loc": loc, "input": value, **({"ctx": ctx} if ctx else {})})
    return ValidationError.from_exception_data(err.title, out)
