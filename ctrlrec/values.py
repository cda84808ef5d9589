"""Value predictors v(u, i, r): how well item i fits user u's request r (users × items arrays).

This module holds the untrained-embedding baseline; the direct-LLM and distilled predictors sit
beside it behind the same shape of function (requests and items in, a users × items array out)."""

from __future__ import annotations

import numpy as np

from .embeddings import encode


def untrained_values(encoder, request_texts: list[str], item_emb: np.ndarray) -> np.ndarray:
    """Dot product of untuned request and item embeddings; each distinct request is embedded once."""
    unique, inverse = np.unique(np.asarray(request_texts, dtype=object), return_inverse=True)
    req_emb = encode(encoder, list(unique))
    return (req_emb @ item_emb.T)[inverse].astype(np.float32)
