"""LLM-written requests (validation, retries, template fallback) and the judge stage."""

import numpy as np
import pandas as pd
import pytest

from ctrlrec.llm.backends import render
from ctrlrec.llm.cache import CachedLLM, LLMCache
from ctrlrec.requests import (REQUEST_GENRES, detect_genres, llm_genre_requests, llm_open_requests,
                              parse_statement)


def test_genre_detection_and_statement_parsing():
    assert detect_genres("I'd love a good sci-fi movie tonight") == ["Sci-Fi"]
    assert detect_genres("A science fiction film, please") == ["Sci-Fi"]
    assert detect_genres("Something for the whole family") == ["Children"]
    assert detect_genres("a romantic comedy") == ["Comedy", "Romance"]
    assert detect_genres("just a movie") == []
    assert parse_statement("ok <statement>I want a slow, moody film. Thanks!</statement>") == \
        "I want a slow, moody film."
    assert parse_statement("no tags here") is None


def _llm(backend, tmp_path):
    return CachedLLM(lambda: backend, backend.identity, LLMCache(tmp_path / "c.sqlite"))


@pytest.mark.slow
def test_garbage_answers_fall_back_to_templates_and_say_so(tiny_backend, split, movielens, tmp_path):
    users = split.user_ids[:3]
    llm = _llm(tiny_backend, tmp_path)
    df = llm_genre_requests(llm, lambda c: render(tiny_backend.tokenizer, c), split,
                            movielens.items, users, tries=2)
    # a random-weight model writes no valid request: every user gets the template, recorded
    assert (df.source == "template").all() and (df.attempts == 2).all()
    assert set(df.genre) <= set(REQUEST_GENRES)
    assert llm.calls == 6  # 3 users × 2 tries, nothing more
    open_ = llm_open_requests(llm, lambda c: render(tiny_backend.tokenizer, c), split,
                              movielens.items, users, tries=1)
    assert (open_.source == "template").all() and open_["style"].nunique() == 3  # styles rotate





@pytest.mark.slow
def test_judge_grades_each_distinct_feed_once(tiny_model_dir, tmp_path, monkeypatch, movielens):
    from bench.stages.evaluate import judge_stage

    monkeypatch.setenv("CTRLREC_LLM_CACHE", str(tmp_path / "j.sqlite"))
    items = movielens.items.assign(text=movielens.items.title)
    req = {"requests": pd.DataFrame({"user_id": [1, 2], "text": ["a comedy", "a horror film"]})}
    same = np.array([[[1, 2], [3, 4]], [[1, 2], [3, 4]]])   # two w values, identical feeds
    other = np.array([[[1, 2], [5, 6]], [[7, 8], [5, 6]]])
    llm = {"backend": "hf", "model": str(tiny_model_dir), "dtype": "float32", "batch_size": 4,
           "threads": 1, "prefix_reuse": True}
    cfg = {"llm": llm, "ks": [2], "ws": None, "mass_threshold": 0.0, "sweep_ws": [0.0, 1.0],
           "sweeps": [["a", "none", "rank", 0, 2, "all"], ["b", "none", "rank", 0, 2, "all"]]}
    out = judge_stage(cfg, {"items": items}, req, {"recs": same}, {"recs": other})
    # distinct (user, feed): user 1: [1,2], [7,8]; user 2: [3,4], [5,6]
    assert out["stats"]["feeds_judged"] == 4 and out["stats"]["llm_calls"] == 4
    df = out["per_user"]
    assert len(df) == 8 and df.judge.between(0, 1).all()
    a = df[df.method == "a"]
    assert a.groupby("user_id").judge.nunique().eq(1).all()  # same feed, same grade


@pytest.mark.slow
def test_item_summaries_keep_the_basic_text_first_and_are_cached(tiny_backend, tmp_path):
    from ctrlrec.data import summarised_texts

    llm = _llm(tiny_backend, tmp_path)
    basic = ["Toy Story (1995). Genres: Animation.", "Heat (1995). Genres: Crime."]
    draw = lambda c: render(tiny_backend.tokenizer, c)  # noqa: E731
    out = summarised_texts(llm, draw, basic, max_new_tokens=4)
    assert [o.startswith(b) for o, b in zip(out, basic)] == [True, True]
    assert all(len(o) > len(b) for o, b in zip(out, basic))
    assert summarised_texts(llm, draw, basic, max_new_tokens=4) == out and llm.calls == 2


@pytest.mark.slow
def test_own_open_ended_requests_come_from_evaluable_users_outside_the_evaluated(
        tiny_backend, movielens, tmp_path, monkeypatch):
    """Distillation's own open-ended requests are written for users left out of the evaluated
    sample, and under one cutoff in time only for users with ratings on both sides of it (the
    request is written from the favourites of the test half)."""
    import ctrlrec.requests as R
    from bench.stages.data import evaluated_users
    from bench.stages.distill import own_kind_requests
    from ctrlrec.data import split_ratings

    split = split_ratings(movielens.ratings, "global_time", 0.5)
    ds = {"train": split.train, "test": split.test, "items": movielens.items,
          "split": {"user_ids": split.user_ids.tolist(), "item_ids": split.item_ids.tolist(),
                    "meta": split.meta}}
    asked, real = [], R.llm_open_requests

    def recording(llm, draw, s, items, users, **kw):  # the real writer, one try per user
        asked.extend(int(u) for u in users)
        return real(llm, draw, s, items, users, tries=1, **kw)

    monkeypatch.setattr(R, "llm_open_requests", recording)
    own = {"kind": "open_ended", "users": 30, "seed": 0, "n": 8, "history_from": "test",
           "unique": True}
    out = own_kind_requests(own, ds, _llm(tiny_backend, tmp_path), tiny_backend.tokenizer, set())
    outside = set(split.evaluable_users().tolist()) - set(evaluated_users(split, 30, 0).tolist())
    assert len(set(asked)) == 8 and set(asked) <= outside
    assert (out.kind == "suite_open_ended").all()  # (a random model's answers are all dropped)
