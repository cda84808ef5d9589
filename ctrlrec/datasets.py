"""Datasets as plug-ins: what a dataset provides, and the one registry of them.

A dataset is timestamped ratings plus items with a title, optional text, and boolean category
flags; its `DatasetInfo` says which categories exist, which of them a request may name, and which
noun the prompts use for an item. Each registry entry names a module with five functions, all
taking the suite's `path` and the entry's options:

    load(path, **options) -> Dataset        read and validate (raise DataError, one line)
    check(path, **options) -> None          cheap checks before a run starts (raise DataError)
    n_users(path, **options) -> int         users with two ratings or more, whom the per-user
                                            split can evaluate (the plan needs it before loading)
    fingerprint(path, **options) -> dict|None   what enters the dataset's cache key beyond the
                                            suite's keys (e.g. file hashes); None: nothing
    fetch() -> str | None                   put the data in the cache (None: nothing to fetch)

Adding a dataset is one module and one line in DATASETS."""

from __future__ import annotations

import difflib
import importlib
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from .llm.prompts import Words, words_for

if TYPE_CHECKING:  # kept out of imports at run time: `bench --help` lists datasets
    import numpy as np
    import pandas as pd


class DataError(RuntimeError):
    """The data could not be loaded or failed a check."""


@dataclass(frozen=True)
class DatasetInfo:
    """What the harness needs to know about a dataset beyond its tables (JSON-able, cached with
    the dataset stage's output)."""

    name: str
    categories: tuple[str, ...]           # category columns of `items`, in order
    request_categories: tuple[str, ...]   # those a (category) request may name
    item_noun: str = "item"               # how prompts and requests speak of one item
    phrases: dict = field(default_factory=dict)   # category -> how it reads inside a sentence
    patterns: dict = field(default_factory=dict)  # category -> regex that finds it in a request

    def phrase(self, category: str) -> str:
        return self.phrases.get(category, category)

    def pattern(self, category: str) -> str:
        """Default: the name as a whole word (any case)."""
        import re
        return self.patterns.get(category) or rf"(?<!\w){re.escape(category)}(?!\w)"

    @property
    def words(self) -> Words:
        return words_for(self.item_noun)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> DatasetInfo:
        return cls(**{**d, "categories": tuple(d["categories"]),
                      "request_categories": tuple(d["request_categories"])})


@dataclass
class Dataset:
    """ratings: user_id, item_id, rating, timestamp (int64). items: item_id (sorted), title, year
    (nullable Int64), optionally description, and one bool column per category in `info`."""

    ratings: pd.DataFrame
    items: pd.DataFrame
    info: DatasetInfo
    source: str = ""

    @property
    def category_matrix(self) -> np.ndarray:
        """items × categories booleans, rows in item_id order."""
        return self.items[list(self.info.categories)].to_numpy(dtype=bool)


@dataclass(frozen=True)
class DatasetEntry:
    module: str                      # implements load, check, n_users, fingerprint, fetch
    needs_path: bool = False         # `data.path` is required
    path_help: str = ""              # what `data.path` is, for messages
    options: tuple[str, ...] = ()    # extra keys of the suite's `data:` section it accepts
    # its training requests (distillation) are keyed without the dataset, as they were before
    # datasets were plug-ins: true only for ml-100k, so existing caches stay valid
    train_requests_without_dataset: bool = False

    def impl(self):
        return importlib.import_module(self.module)


DATASETS: dict[str, DatasetEntry] = {
    "ml-100k": DatasetEntry("ctrlrec.ml100k", path_help="an extracted ml-100k folder",
                            train_requests_without_dataset=True),
    "folder": DatasetEntry("ctrlrec.folder", needs_path=True,
                           path_help="a folder with ratings.csv and items.csv",
                           options=("item_noun", "request_categories")),
}


def dataset_entry(name: str) -> DatasetEntry:
    if name not in DATASETS:
        close = difflib.get_close_matches(name, DATASETS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown dataset {name!r}{hint}; allowed: {', '.join(DATASETS)}")
    return DATASETS[name]


def load_dataset(name: str, path: str | None = None, **options) -> Dataset:
    return dataset_entry(name).impl().load(path, **options)


def check_settings(name: str, path: str | None, options: dict) -> None:
    """A suite's data section against the entry: a path where one is needed, no foreign options."""
    entry = dataset_entry(name)
    if entry.needs_path and path is None:
        raise ValueError(f"dataset {name} needs path: {entry.path_help}")
    for k in sorted(set(options) - set(entry.options)):
        raise ValueError(f"{k} is not a setting of the {name} dataset; allowed: "
                         f"{', '.join(('path', 'split', 'items', *entry.options))}")
