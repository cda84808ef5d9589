"""Distillation: item sampling, correlations on constructed data, the training loop, checkpoints,
and the distilled value path (no LLM call)."""

import numpy as np
import pandas as pd
import pytest

from ctrlrec.distill import (TrainConfig, TwoTower, correlations, parse_jsonl_requests,
                             predict_pairs, sample_items, train)
from ctrlrec.embeddings import resolve_model


def test_correlations_on_constructed_data():
    x = np.arange(10.0)
    assert correlations(x, 2 * x + 1) == {"pearson": pytest.approx(1.0),
                                          "spearman": pytest.approx(1.0), "n": 10}
    assert correlations(x, -x)["spearman"] == pytest.approx(-1.0)
    y = x ** 3  # monotone, not linear: Spearman 1, Pearson below 1
    c = correlations(x, y)
    assert c["spearman"] == pytest.approx(1.0) and c["pearson"] < 0.95


def test_item_sampling_mixes_top_and_uniform():
    scores = np.tile(np.arange(100.0), (3, 1))
    picks = sample_items(scores, 10, seed=0)
    for p in picks:
        assert len(set(p)) == 10
        assert set(p[:5]) == {99, 98, 97, 96, 95}
        assert all(i < 95 for i in p[5:])


def test_jsonl_parsing_tolerates_pretty_printing_and_truncation():
    text = '{\n "request": "A slow French drama, please"\n}\n{"request": "no", "x": 1}\n' \
           '{"request": "Something fun for ki'
    assert parse_jsonl_requests(text) == ["A slow French drama, please"]


@pytest.fixture(scope="module")
def pairs():
    reqs = ["I want a scary horror film", "A funny movie for my kids", "A tense crime thriller"]
    items = {"Scream (1996). Genres: Horror, Thriller.": (1.0, 0.0, 0.6),
             "Toy Story (1995). Genres: Animation, Children, Comedy.": (0.0, 1.0, 0.0),
             "Heat (1995). Genres: Action, Crime, Thriller.": (0.3, 0.0, 1.0),
             "Babe (1995). Genres: Children, Comedy, Drama.": (0.0, 0.9, 0.0)}
    rows = [(r, t, labels[j]) for t, labels in items.items() for j, r in enumerate(reqs)]
    return pd.DataFrame(rows, columns=["request", "item_text", "label"])


@pytest.mark.slow
def test_training_reduces_the_loss_and_checkpoints_reload_identically(pairs):
    import torch
    torch.set_num_threads(1)
    towers = TwoTower(resolve_model("all-MiniLM-L6-v2"))
    history = train(towers, pairs, TrainConfig(epochs=6, lr=1e-4, requests_per_batch=3,
                                               items_per_request=4, rank_loss=1.0))
    assert history[-1]["loss"] < history[0]["loss"]
    pred = predict_pairs(towers, pairs)
    assert correlations(pred, pairs.label)["spearman"] > 0.5
    again = TwoTower(resolve_model("all-MiniLM-L6-v2")).load_bytes(towers.state_bytes())
    np.testing.assert_allclose(predict_pairs(again, pairs), pred, atol=1e-6)


@pytest.mark.slow
def test_distilled_values_make_no_llm_call(pairs, monkeypatch):
    from bench.stages import values as stages
    from ctrlrec.llm import registry

    monkeypatch.setattr(registry, "load_backend", lambda *a, **k: pytest.fail("LLM used"))
    monkeypatch.setattr(stages, "open_llm", lambda *a, **k: pytest.fail("LLM opened"))
    towers = TwoTower(resolve_model("all-MiniLM-L6-v2"))
    items = pairs.item_text.unique().tolist()
    student = {"towers": towers.state_bytes(), "item_emb": towers.embed_items(items),
               "split": pd.DataFrame({"request": ["I want a scary horror film"], "val": [False]})}
    req = {"requests": pd.DataFrame({"text": ["I want a scary horror film", "Something else"]})}
    out = stages.distilled_values_stage({"model": "all-MiniLM-L6-v2"}, student, req)
    assert out["values"].shape == (2, len(items))
    np.testing.assert_allclose(out["values"][0], towers.embed_requests(
        ["I want a scary horror film"])[0] @ student["item_emb"].T, atol=1e-5)
    assert out["stats"]["eval_requests_seen_in_training"] == 1
