"""Micro-benchmarks of the harness's hot paths at MovieLens-100k size (943 users × 1,682 items,
21 w values), on synthetic arrays of that shape. Not part of the test suite; run with

    .venv/bin/python -m pytest benchmarks --benchmark-only \
        --benchmark-storage=results/benchmarks --benchmark-compare=0001 --benchmark-columns=min,median,max

and save a new baseline with `--benchmark-save=<name>` (results/benchmarks/ holds the committed one)."""

import numpy as np
import pytest
import torch

from ctrlrec import aggregate, metrics
from ctrlrec.retrieval import topk_dot

USERS, ITEMS, K = 943, 1682, 10
WS = [round(0.05 * i, 2) for i in range(21)]


@pytest.fixture(scope="module")
def arrays():
    rng = np.random.default_rng(0)
    eng = rng.normal(size=(USERS, ITEMS))
    req = rng.normal(size=(USERS, ITEMS))
    candidates = rng.random((USERS, ITEMS)) > 0.06          # ~6% seen in train
    relevant = (rng.random((USERS, ITEMS)) < 0.03) & candidates
    genres = rng.random((ITEMS, 19)) < 0.1
    requested = rng.integers(0, 19, USERS)
    return eng, req, candidates, relevant, genres, requested


@pytest.mark.parametrize("rule", aggregate.RULES)
def test_sweep_all_users_all_w(benchmark, arrays, rule):
    eng, req, cand = arrays[:3]
    out = benchmark(aggregate.sweep, rule, eng, req, cand, WS, K)
    assert out.shape == (len(WS), USERS, K)


def test_rank_normalisation(benchmark, arrays):
    eng, _, cand = arrays[:3]
    assert benchmark(aggregate.rank01, eng, cand).shape == (USERS, ITEMS)


def test_top_k(benchmark, arrays):
    eng = arrays[0]
    assert benchmark(aggregate.top_k, eng, K).shape == (USERS, K)


def test_metrics_all_users(benchmark, arrays):
    eng, _, _, relevant, genres, requested = arrays
    topk = aggregate.top_k(eng, K)

    def all_metrics():
        return (metrics.precision_at_k(topk, relevant), metrics.recall_at_k(topk, relevant),
                metrics.ndcg_at_k(topk, relevant),
                metrics.genre_accuracy_at_k(topk, genres, requested))
    assert len(benchmark(all_metrics)) == 4


@pytest.mark.parametrize("n_items", [1682, 100_000])
def test_distilled_scoring(benchmark, n_items):
    """One matrix product of every user's request embedding with the item tower's matrix + top-k."""
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    items = torch.randn(n_items, 384, generator=g)
    queries = torch.randn(USERS, 384, generator=g)
    v, i = benchmark(topk_dot, queries, items, K)
    assert i.shape == (USERS, K)
