"""Throughput suite files: reading them, their defaults, and the error they raise.

The suite is validated by a pydantic model (schema.py), as benchmark suites are. pydantic is not
among the packages of a bare GPU machine (torch, transformers, sentence-transformers), where
`python -m bench.throughput SUITE --measure-only` must still run, so there the file is read with
its defaults filled in and nothing checked; the committed suites are checked by the tests."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

# Defaults of the keys a suite may leave out: the schema's, and those of the unchecked read.
DEFAULTS = {"description": "", "seed": 0, "top_k": 10, "threads": None, "item_texts": "movielens"}
PATH_DEFAULTS = {"dtype": "auto", "budget_s": 120, "device": None}
METHOD_DEFAULTS = {"direct": {"backend": "hf", "batch_size": 32},
                   "distilled": {"max_item_matrix_gib": 4, "encode_batch": 64,
                                 "score_buffer_mib": 256}}


class ThroughputError(ValueError):
    """A bad throughput suite: one line naming the file, key, value and what is allowed."""


def load_config(path: str | Path) -> dict:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ThroughputError(f"{path}: cannot read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ThroughputError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return validate(raw, str(path))


def validate(raw, where: str) -> dict:
    """The suite as a plain dict (what measurements.json records), defaults filled in."""
    if isinstance(raw, dict) and "methods" in raw and "paths" not in raw:
        raise ThroughputError(f"{where}: a benchmark suite (it has `methods`, no `paths`); "
                              f"`bench run {where}` runs it")
    if isinstance(raw, dict):
        raw = {"name": Path(where).stem, **raw}
    try:
        from .schema import validate as checked
    except ModuleNotFoundError as exc:
        if exc.name not in ("pydantic", "pydantic_core"):
            raise
        return _unchecked(raw, where)
    return checked(raw, where)


def _unchecked(raw, where: str) -> dict:
    print(f"warning: {where}: read without validation (pydantic is not installed here)",
          file=sys.stderr)
    try:
        return {**DEFAULTS, **raw, "items": sorted(set(raw["items"])),
                "requests": sorted(set(raw["requests"])),
                "paths": [{**PATH_DEFAULTS, **METHOD_DEFAULTS[p["method"]], **p}
                          for p in raw["paths"]]}
    except (KeyError, TypeError) as exc:
        raise ThroughputError(f"{where}: not a throughput suite ({type(exc).__name__}: {exc})") \
            from None


def path_label(p: dict) -> str:
    name = p.get("model") or p["random_arch"]
    return f"{p['method']}: {name}{' (random weights)' if 'random_arch' in p else ''}, {p['dtype']}"
