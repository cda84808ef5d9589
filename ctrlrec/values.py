"""Value predictors v(u, i, r): how well item i fits user u's request r (users × items arrays).

Every predictor the harness runs has the `ValuePredictor` shape; the registry in
`bench/methods.py` names its inputs, cache-key fields and models. This module holds the
untrained-embedding baseline; the direct-LLM and distilled predictors live with their stages."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from .embeddings import encode


class ValuePredictor(Protocol):
    """`config`: the method's settings that enter the cache key (plus `context` for methods that
    use it); `inputs`: the artefacts of the inputs its registry entry names, in that order.
    Returns {"values": float32 array, one row per request (in `requests` order) and one column
    per item (in dataset order), NaN where the method did not score the item} and optionally
    {"stats": JSON-able facts for the manifest}."""

    def __call__(self, config: dict, *inputs: dict) -> dict: ...


def untrained_values(encoder, request_texts: list[str], item_emb: np.ndarray) -> np.ndarray:
    """Dot product of untuned request and item embeddings; each distinct request is embedded once."""
    unique, inverse = np.unique(np.asarray(request_texts, dtype=object), return_inverse=True)
    req_emb = encode(encoder, list(unique))
    return (req_emb @ item_emb.T)[inverse].astype(np.float32)
