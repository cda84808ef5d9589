"""Top-k items by dot product for a batch of request embeddings, over item matrices of any size.

The distilled method's evaluation path at catalogue scale: one matrix product per request against
precomputed item embeddings, then a top-k. Items are processed in chunks so the score buffer stays
bounded (requests × chunk), and a running top-k is merged chunk by chunk."""

from __future__ import annotations


def topk_dot(queries, items, k: int, chunk: int | None = None, buffer_bytes: int = 256 * 2**20):
    """queries (R, d) and items (N, d) torch tensors on one device -> (scores, indices), each (R, k).

    `chunk` items per step; by default as many as fit `buffer_bytes` of float32 scores."""
    import torch

    n = items.shape[0]
    k = min(k, n)
    if chunk is None:
        chunk = max(k, buffer_bytes // (4 * max(1, queries.shape[0])))
    queries = queries.to(items.dtype)
    best_v = best_i = None
    with torch.no_grad():
        for lo in range(0, n, chunk):
            scores = queries @ items[lo:lo + chunk].T
            v, i = torch.topk(scores, min(k, scores.shape[1]), dim=1)
            i = i + lo
            if best_v is not None:  # merge with the best of the earlier chunks
                both = torch.cat([best_v, v], 1)
                v, pos = torch.topk(both, min(k, both.shape[1]), dim=1)
                i = torch.gather(torch.cat([best_i, i], 1), 1, pos)
            best_v, best_i = v, i
    return best_v, best_i
