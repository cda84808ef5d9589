"""Fingerprints of a model's files. They enter answer and stage keys, so a model whose weights
are replaced at the same path (a new checkpoint saved over the last one) is another model and
nothing cached for the old weights is reused."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from ..paths import cache_root

# what answers depend on in a model folder: config, tokenizer and weight files
MODEL_FILES = (".json", ".safetensors", ".bin", ".model", ".gguf", ".txt", ".tiktoken")


def file_digest(path: Path) -> str:
    """sha256 of a file's content. Reading a 3 GB model takes seconds, so the digest is kept in
    the cache under the file's path, size, mtime and inode: it is read again only once the file
    has changed."""
    st = path.stat()
    stamp = f"{path.resolve()}\n{st.st_size}\n{st.st_mtime_ns}\n{st.st_ino}"
    memo = cache_root() / "file-digests" / hashlib.sha256(stamp.encode()).hexdigest()[:32]
    if memo.is_file():
        return memo.read_text().strip()
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    memo.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=memo.parent)  # another process may write the same memo
    with os.fdopen(fd, "w") as f:
        f.write(digest + "\n")
    os.replace(tmp, memo)
    return digest


def packaged_folder(p: Path) -> bool:
    """A packaged model's dequantised folder (ctrlrec/llm/models.py)."""
    from .models import PACKAGED_LLMS, models_dir

    return p.name == "hf-bf16" and p.parent.name in PACKAGED_LLMS and \
        p.parent.parent.resolve() == models_dir().resolve()


def model_revision(path: str) -> str:
    """A short fingerprint of a model: for a local folder (subfolders included, hidden ones
    not) or file, the names and contents of its files; for anything else (a hub id), the id.
    A packaged model's folder keeps the cheaper fingerprint of names and sizes its answers were
    always keyed by: its content is pinned by the package's sha256 and the dequantisation that
    built it."""
    p = Path(path)
    h = hashlib.sha256()
    if p.is_file():
        h.update(f"{p.name}:{file_digest(p)}".encode())
        return h.hexdigest()[:16]
    if not p.is_dir():
        return "hub:" + path
    if packaged_folder(p):
        for f in sorted(p.iterdir()):
            if f.suffix in (".json", ".safetensors", ".bin", ".model", ".gguf"):
                h.update(f.name.encode())
                h.update(str(f.stat().st_size).encode())
                if f.name == "config.json":
                    h.update(f.read_bytes())
        return h.hexdigest()[:16]
    # subfolders too: a sentence encoder keeps its pooling and normalisation modules in them
    for f in sorted(p.rglob("*")):
        rel = f.relative_to(p)
        if f.suffix in MODEL_FILES and f.is_file() and not any(
                part.startswith(".") for part in rel.parts):
            h.update(rel.as_posix().encode())
            h.update(file_digest(f).encode())
    return h.hexdigest()[:16]
