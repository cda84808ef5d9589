"""A persistent SQLite cache of LLM answers, shared by every backend.

The key is a sha256 of canonical JSON holding the backend's identity (backend, model, revision,
dtype), the call kind, the prompt exactly as sent, and the parameters. Each batch of answers is
committed in one transaction as soon as it arrives, so a killed run keeps everything it finished
and never leaves a half-written row."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path


def call_key(identity: dict, kind: str, prompt, params: dict) -> str:
    blob = json.dumps({"id": identity, "kind": kind, "prompt": prompt, "params": params},
                      sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


class CorruptCache(RuntimeError):
    pass


def check_cache_file(path: str | Path) -> str | None:
    """Open the cache at `path` and check it (SQLite's quick_check). If it is damaged, move it
    (and its journal files) aside, so that a fresh cache starts there and the lost answers are
    recomputed; return one line saying so. None when the file is fine or absent."""
    path = Path(path)
    if not path.exists():
        return None
    problem = None
    try:
        db = sqlite3.connect(path, timeout=120)
        try:
            row = db.execute("PRAGMA quick_check(1)").fetchone()
            if row is None or row[0] != "ok":
                problem = f"integrity check: {row[0] if row else 'no answer'}"
            else:
                db.execute("SELECT COUNT(*) FROM calls").fetchone()
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        problem = str(exc)
    if problem is None:
        return None
    aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
    path.rename(aside)
    for suffix in ("-wal", "-shm", "-journal"):
        extra = path.with_name(path.name + suffix)
        if extra.exists():
            extra.rename(aside.with_name(aside.name + suffix))
    return (f"LLM cache {path} is corrupt ({problem}); moved to {aside.name}, starting a fresh "
            f"one (its answers will be recomputed)")


class LLMCache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, timeout=120, isolation_level=None,
                                       check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA busy_timeout=120000")
            self._db.execute("CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, kind TEXT, "
                             "value TEXT NOT NULL, created REAL)")
        except sqlite3.DatabaseError as exc:  # `bench run` checks (and sets aside) it first
            raise CorruptCache(f"LLM cache {self.path}: {exc}") from None

    def get_many(self, keys: list[str]) -> dict[str, object]:
        out = {}
        with self._lock:
            for lo in range(0, len(keys), 500):
                chunk = keys[lo:lo + 500]
                q = f"SELECT key, value FROM calls WHERE key IN ({','.join('?' * len(chunk))})"
                out.update((k, json.loads(v)) for k, v in self._db.execute(q, chunk))
        return out

    def put_many(self, kind: str, items: dict[str, object]) -> None:
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT OR REPLACE INTO calls (key, kind, value, created) VALUES (?, ?, ?, ?)",
                    [(k, kind, json.dumps(v), now) for k, v in items.items()])
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM calls").fetchone()[0]

    def close(self) -> None:
        self._db.close()


class CachedLLM:
    """Wraps a backend factory: answers come from the cache when present, and the model is only
    loaded when something is missing. Counts hits and calls, so tests can prove that a rerun makes
    no repeated calls.

    The distinct prompts of a call are cut into shards of `shard` prompts, in order of first
    appearance: fixed by content, never by how many workers answer them. Only the missing prompts
    of a shard are asked, and each shard's answers are committed as it returns. `executor` runs
    shards (e.g. on a pool of workers, bench/llmpool.py): called as executor(kind, shards,
    params), it yields (shard index, answers) in any order; by default this process's backend
    answers them one after the other. An executor may say how it computed (`settings`)."""

    def __init__(self, factory, identity: dict, cache: LLMCache, shard: int = 64,
                 executor=None):
        self._factory = factory
        self._backend = None
        self.identity = identity
        self.cache = cache
        self.shard = shard
        self.executor = executor or self._here
        self.hits = 0
        self.calls = 0
        # seconds this process spent on its own share of the work (keys, cache reads, commits),
        # not waiting for answers: the serial part of an LLM stage however many workers answer
        self.own_seconds = 0.0

    @property
    def backend(self):
        if self._backend is None:
            self._backend = self._factory()
        return self._backend

    @property
    def settings(self) -> dict:
        """How answers were computed (for manifests); empty when nothing was."""
        if self.executor != self._here:  # e.g. a pool: what its workers reported
            return dict(getattr(self.executor, "settings", {}))
        return self._backend.settings if self._backend is not None else {}

    def _here(self, kind: str, shards: list[list], params: dict):
        for i, shard in enumerate(shards):
            yield i, (self.backend.rate(shard) if kind == "rate"
                      else self.backend.generate(shard, **params))

    def rate(self, prompts, progress_bar=None):
        from .backends import Rating

        t0 = time.perf_counter()
        keys = [call_key(self.identity, "rate", p.text, {}) for p in prompts]
        self.own_seconds += time.perf_counter() - t0
        found = self._through_cache("rate", keys, prompts, {}, progress_bar,
                                    encode=lambda r: r.as_json())
        return [Rating.from_json(found[k]) for k in keys]

    def generate(self, texts: list[str], **params) -> list[str]:
        t0 = time.perf_counter()
        keys = [call_key(self.identity, "generate", t, params) for t in texts]
        self.own_seconds += time.perf_counter() - t0
        found = self._through_cache("generate", keys, texts, params)
        return [found[k] for k in keys]

    def _through_cache(self, kind, keys, inputs, params, progress_bar=None, encode=None):
        """Answers for `keys`: cached ones read, each distinct missing one computed once."""
        t0 = time.perf_counter()
        by_key = dict(zip(keys, inputs))
        distinct = list(by_key)
        found = self.cache.get_many(distinct)
        self.hits += sum(k in found for k in keys)
        if progress_bar is not None:
            progress_bar.update(sum(k in found for k in keys))
        shards = [distinct[lo:lo + self.shard] for lo in range(0, len(distinct), self.shard)]
        todo = [missing for sh in shards if (missing := [k for k in sh if k not in found])]
        self.own_seconds += time.perf_counter() - t0
        for i, outs in self.executor(kind, [[by_key[k] for k in t] for t in todo], params):
            t0 = time.perf_counter()
            new = {k: encode(o) if encode else o for k, o in zip(todo[i], outs)}
            self.cache.put_many(kind, new)
            self.calls += len(new)
            found.update(new)
            if progress_bar is not None:
                progress_bar.update(sum(k in new for k in keys))
            self.own_seconds += time.perf_counter() - t0
        return found
