"""The `folder` dataset plug-in: any catalogue given as two CSV files (format in the README).

    ratings.csv  user_id,item_id,rating,timestamp   whole-number ids, ratings from 0 to 5,
                                                     whole-number timestamps (e.g. Unix seconds)
    items.csv    item_id,title,categories[,description]   categories: names separated by '|'

Every problem is one DataError line naming the file, the line, the column, the value and what is
allowed. The files' sha256 enter the dataset's cache key, so an edited file is never served from
an old cache entry."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pandas as pd

from .datasets import DataError, Dataset, DatasetInfo

RATINGS, ITEMS = "ratings.csv", "items.csv"
RATING_COLUMNS = ("user_id", "item_id", "rating", "timestamp")
ITEM_COLUMNS = ("item_id", "title", "categories")
ITEM_OPTIONAL = ("description",)
RESERVED = ("item_id", "title", "year", "description", "text")  # columns of the items table
MAX_ID = 2**31 - 1  # item ids are stored as int32 in recommendations
NOUN = re.compile(r"^[a-z][a-z -]{0,30}$")


def load(path: str | None, item_noun: str = "item",
         request_categories: list[str] | None = None) -> Dataset:
    folder = _folder(path)
    if not NOUN.match(item_noun or ""):
        raise DataError(f"data.item_noun: {item_noun!r} is not allowed; allowed: a lower-case "
                        f"singular noun with a regular plural, e.g. book")
    ratings = _ratings(folder / RATINGS)
    items, categories = _items(folder / ITEMS)
    unknown = np.setdiff1d(ratings.item_id.unique(), items.item_id)
    if len(unknown):
        line = int(np.flatnonzero(ratings.item_id.to_numpy() == unknown[0])[0]) + 2
        raise DataError(f"{folder / RATINGS}: line {line}: item_id {unknown[0]} is not in "
                        f"{ITEMS}; allowed: the item_id values of {ITEMS}")
    requested = list(request_categories) if request_categories else categories
    for c in requested:
        if c not in categories:
            raise DataError(f"data.request_categories: {c!r} is not a category in "
                            f"{folder / ITEMS}; allowed: {', '.join(categories)}")
    info = DatasetInfo("folder", tuple(categories), tuple(dict.fromkeys(requested)), item_noun)
    return Dataset(ratings, items, info, source="folder")


def check(path: str | None, **options) -> None:
    load(path, **options)  # a full read: every error surfaces before a run starts


def n_users(path: str | None, **options) -> int:
    counts = _ratings(_folder(path) / RATINGS).user_id.value_counts()
    return int((counts >= 2).sum())  # one rating: nothing left for a test half


def fingerprint(path: str | None, **options) -> dict:
    folder = _folder(path)
    return {name: _sha256(folder / name) for name in (RATINGS, ITEMS)}


def fetch() -> None:
    return None  # read from its folder: nothing to download


def _folder(path: str | None) -> Path:
    if path is None:
        raise DataError(f"data.path: missing; allowed: a folder with {RATINGS} and {ITEMS}")
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise DataError(f"data.path: {path}: no such folder; allowed: a folder with {RATINGS} "
                        f"and {ITEMS}")
    return folder


def _read(file: Path, required: tuple, optional: tuple = ()) -> pd.DataFrame:
    if not file.is_file():
        raise DataError(f"{file}: no such file; allowed: a CSV file with a header line "
                        f"{','.join(required)}")
    try:
        df = pd.read_csv(file, dtype=str, keep_default_na=False, encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{file}: not UTF-8 text (byte {exc.start})") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{file}: not readable as CSV ({first})") from None
    df.columns = [c.strip() for c in df.columns]
    for c in df.columns:
        if c not in required + optional:
            raise DataError(f"{file}: column {c!r} is not allowed; allowed: "
                            f"{', '.join(required + optional)}")
    for c in required:
        if c not in df.columns:
            raise DataError(f"{file}: column {c!r} is missing; required: {', '.join(required)}")
    if df.empty:
        raise DataError(f"{file}: no rows; allowed: at least one row after the header")
    return df


def _numbers(file: Path, df: pd.DataFrame, col: str, whole: bool, lo: float, hi: float,
             allowed: str) -> pd.Series:
    text = df[col].str.strip()
    values = pd.to_numeric(text, errors="coerce")
    bad = values.isna() | ~values.between(lo, hi)
    if whole:
        bad |= values.notna() & (values % 1 != 0)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"{file}: line {i + 2}: {col} {df[col].iloc[i]!r} is not allowed; "
                        f"allowed: {allowed}")
    return values.astype(np.int64) if whole else values


def _ratings(file: Path) -> pd.DataFrame:
    df = _read(file, RATING_COLUMNS)
    ids = "whole numbers from 0 to 2147483647"
    out = pd.DataFrame({
        "user_id": _numbers(file, df, "user_id", True, 0, MAX_ID, ids),
        "item_id": _numbers(file, df, "item_id", True, 0, MAX_ID, ids),
        "rating": _numbers(file, df, "rating", False, 0, 5, "numbers from 0 to 5"),
        "timestamp": _numbers(file, df, "timestamp", True, 0, 2**62,
                              "whole numbers of 0 or more (e.g. Unix seconds)"),
    })
    if (out.rating % 1 == 0).all():
        out["rating"] = out.rating.astype(np.int64)
    dup = out.duplicated(["user_id", "item_id"])
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise DataError(f"{file}: line {i + 2}: user_id {out.user_id[i]} rates item_id "
                        f"{out.item_id[i]} a second time; allowed: one rating per user and item")
    return out


def _items(file: Path) -> tuple[pd.DataFrame, list[str]]:
    df = _read(file, ITEM_COLUMNS, ITEM_OPTIONAL)
    ids = _numbers(file, df, "item_id", True, 0, MAX_ID, "whole numbers from 0 to 2147483647")
    dup = ids.duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise DataError(f"{file}: line {i + 2}: item_id {ids[i]} appears a second time; "
                        f"allowed: each item_id once")
    titles = df.title.str.strip()
    if (titles == "").any():
        i = int(np.flatnonzero((titles == "").to_numpy())[0])
        raise DataError(f"{file}: line {i + 2}: title is empty; allowed: any non-empty text")
    per_item, categories = [], {}
    for i, cell in enumerate(df.categories):
        names = [n.strip() for n in cell.split("|")] if cell.strip() else []
        for n in names:
            if not n or n in RESERVED:
                raise DataError(f"{file}: line {i + 2}: categories {cell!r} holds the name "
                                f"{n!r}; allowed: non-empty names separated by '|', none of "
                                f"{', '.join(RESERVED)}")
            categories.setdefault(n, None)
        per_item.append(set(names))
    if not categories:
        raise DataError(f"{file}: categories: every cell is empty; allowed: at least one item "
                        f"with a category (names separated by '|')")
    names = sorted(categories)
    items = pd.DataFrame({"item_id": ids, "title": titles,
                          "year": pd.array([pd.NA] * len(df), dtype="Int64")})
    if "description" in df:
        items["description"] = df.description.str.strip()
    flags = pd.DataFrame({n: [n in s for s in per_item] for n in names}, dtype=bool)
    items = pd.concat([items, flags], axis=1)
    return items.sort_values("item_id", ignore_index=True), names


def _sha256(file: Path) -> str:
    if not file.is_file():
        raise DataError(f"{file}: no such file")
    return hashlib.sha256(file.read_bytes()).hexdigest()
