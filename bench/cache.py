"""A content-addressed cache of stage outputs: one folder per (stage, key), written atomically.

The key is a sha256 over the stage name, its code version, a hash of the project code it runs,
its own config and the keys of its inputs, so a changed upstream config or code invalidates
everything downstream and nothing else. A folder exists only once complete (written under a
temporary name, then renamed), so a killed run leaves no half-written entry and a rerun
recomputes only what is missing. `_meta.json` holds the size and
sha256 of every file; an entry that no longer matches (a truncated or edited file, a damaged disk)
is reported, removed and recomputed instead of being read."""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from .suite import stable_hash


def stage_key(stage: str, version: int, config: dict, inputs: list[str] = (),
              code: str = "") -> str:
    """`config["_runtime"]` (settings that cannot change the output) stays out of the key.
    `code`: the hash of the project code the stage runs (bench/codehash.py), so an edit to it
    misses the old entries by itself; `version` remains a salt to bump by hand for what that
    hash cannot see (a changed third-party library, data read from outside the code)."""
    config = {k: v for k, v in config.items() if k != "_runtime"}
    return stable_hash({"stage": stage, "version": version, "config": config,
                        "inputs": list(inputs), "code": code})[:20]


class StageCache:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def folder(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def has(self, stage: str, key: str) -> bool:
        return (self.folder(stage, key) / "_meta.json").exists()

    def verify(self, stage: str, key: str) -> str | None:
        """None if the entry is intact, else what is wrong with it (one line). Entries written
        before checksums were recorded are checked by loading them."""
        folder = self.folder(stage, key)
        try:
            meta = json.loads((folder / "_meta.json").read_text())
        except (OSError, ValueError) as exc:
            return f"_meta.json unreadable ({type(exc).__name__})"
        files = meta.get("files") if isinstance(meta, dict) else None
        if files is None:  # an entry from before checksums: cheap structural checks
            try:
                for f in folder.iterdir():
                    if f.suffix == ".npy":
                        np.load(f, mmap_mode="r", allow_pickle=False)  # header and size
                    elif f.suffix == ".parquet":
                        import pyarrow.parquet as pq
                        pq.read_metadata(f)  # the footer, which a cut-off file lacks
                    elif f.suffix == ".json":
                        json.loads(f.read_text())
            except Exception as exc:  # noqa: BLE001 - any failure means "recompute"
                text = str(exc).splitlines()[0][:80] if str(exc) else ""
                return f"{f.name} unreadable ({type(exc).__name__}: {text})"
            return None
        for name, (size, digest) in files.items():
            f = folder / name
            if not f.is_file():
                return f"{name} missing"
            if f.stat().st_size != size:
                return f"{name} has {f.stat().st_size} bytes, expected {size}"
            if _sha256(f) != digest:
                return f"{name} checksum mismatch"
        return None

    def discard(self, stage: str, key: str) -> None:
        """Remove an entry (moved aside first, so a half-removed folder never looks complete)."""
        folder = self.folder(stage, key)
        trash = folder.parent / f".{key}.{uuid.uuid4().hex[:8]}.bad"
        try:
            folder.rename(trash)
        except FileNotFoundError:
            return
        shutil.rmtree(trash, ignore_errors=True)

    def load(self, stage: str, key: str) -> dict:
        folder = self.folder(stage, key)
        out = {}
        for f in sorted(folder.iterdir()):
            if f.name == "_meta.json":
                continue
            if f.suffix == ".npy":
                out[f.stem] = np.load(f, allow_pickle=False)
            elif f.suffix == ".parquet":
                out[f.stem] = pd.read_parquet(f)
            elif f.suffix == ".json":
                out[f.stem] = json.loads(f.read_text())
            elif f.suffix == ".bin":
                out[f.stem] = f.read_bytes()
        return out

    def meta(self, stage: str, key: str) -> dict:
        return json.loads((self.folder(stage, key) / "_meta.json").read_text())

    def save(self, stage: str, key: str, artefacts: dict, meta: dict) -> None:
        final = self.folder(stage, key)
        tmp = final.parent / f".{key}.{uuid.uuid4().hex[:8]}.tmp"
        tmp.mkdir(parents=True)
        try:
            for name, value in artefacts.items():
                if isinstance(value, np.ndarray):
                    np.save(tmp / f"{name}.npy", value, allow_pickle=False)
                elif isinstance(value, pd.DataFrame):
                    value.to_parquet(tmp / f"{name}.parquet", index=False)
                elif isinstance(value, bytes):  # model weights; never unpickled by the cache
                    (tmp / f"{name}.bin").write_bytes(value)
                else:
                    (tmp / f"{name}.json").write_text(json.dumps(value, indent=1, default=str))
            files = {f.name: [f.stat().st_size, _sha256(f)] for f in sorted(tmp.iterdir())}
            (tmp / "_meta.json").write_text(json.dumps({**meta, "files": files}, indent=1,
                                                       default=str))
            if final.exists():  # another run finished it first: same key, same content
                shutil.rmtree(tmp)
                return
            tmp.rename(final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
