"""A content-addressed cache of stage outputs: one folder per (stage, key), written atomically.

The key is a sha256 over the stage name, its code version, its own config and the keys of its
inputs, so a changed upstream config invalidates everything downstream and nothing else. A folder
exists only once complete (written under a temporary name, then renamed), so a killed run leaves
no half-written entry and a rerun recomputes only what is missing."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from .suite import stable_hash


def stage_key(stage: str, version: int, config: dict, inputs: list[str] = ()) -> str:
    """`config["_runtime"]` (settings that cannot change the output) stays out of the key."""
    config = {k: v for k, v in config.items() if k != "_runtime"}
    return stable_hash({"stage": stage, "version": version, "config": config,
                        "inputs": list(inputs)})[:20]


class StageCache:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def folder(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def has(self, stage: str, key: str) -> bool:
        return (self.folder(stage, key) / "_meta.json").exists()

    def load(self, stage: str, key: str) -> dict:
        folder = self.folder(stage, key)
        out = {}
        for f in sorted(folder.iterdir()):
            if f.name == "_meta.json":
                continue
            if f.suffix == ".npy":
                out[f.stem] = np.load(f)
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
                    np.save(tmp / f"{name}.npy", value)
                elif isinstance(value, pd.DataFrame):
                    value.to_parquet(tmp / f"{name}.parquet", index=False)
                elif isinstance(value, bytes):  # model weights; never unpickled by the cache
                    (tmp / f"{name}.bin").write_bytes(value)
                else:
                    (tmp / f"{name}.json").write_text(json.dumps(value, indent=1, default=str))
            (tmp / "_meta.json").write_text(json.dumps(meta, indent=1, default=str))
            if final.exists():  # another run finished it first: same key, same content
                shutil.rmtree(tmp)
                return
            tmp.rename(final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
