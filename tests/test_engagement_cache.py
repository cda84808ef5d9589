import numpy as np
import pandas as pd
import pytest

from bench.cache import StageCache, stage_key
from ctrlrec.engagement import BiVAEConfig, popularity_scores, train_bivae


@pytest.mark.slow
def test_bivae_is_seeded_and_ranks_unknown_items_last(split):
    cfg = BiVAEConfig(epochs=3)
    _, a = train_bivae(split, cfg)
    _, b = train_bivae(split, cfg)
    assert a.shape == (943, 1682) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    unseen = ~np.isin(split.item_ids, split.train.item_id.unique())
    assert unseen.any()
    assert (a[:, unseen].max(axis=1) < a[:, ~unseen].min(axis=1)).all()


@pytest.mark.slow
def test_a_cornac_model_through_the_stage_is_seeded(split):
    from bench.stages.data import engagement_stage

    ds = {"train": split.train, "test": split.test,
          "split": {"user_ids": split.user_ids, "item_ids": split.item_ids, "meta": split.meta}}
    cfg = {"model": "BPR", "params": {"k": 8, "max_iter": 5, "num_threads": 1}, "seed": 0}
    a, b = engagement_stage(cfg, ds), engagement_stage(cfg, ds)
    other = engagement_stage({**cfg, "seed": 1}, ds)
    assert a["scores"].shape == (943, 1682) and a["scores"].dtype == np.float32
    np.testing.assert_array_equal(a["scores"], b["scores"])
    assert not np.array_equal(a["scores"], other["scores"])  # the suite's seed reaches BPR
    assert set(a["metrics"]) == {"BPR", "popularity"}
    unseen = ~np.isin(split.item_ids, split.train.item_id.unique())
    assert (a["scores"][:, unseen].max(axis=1) < a["scores"][:, ~unseen].min(axis=1)).all()


def test_popularity_counts_train_interactions(split):
    pop = popularity_scores(split)
    counts = split.train.item_id.value_counts()
    assert pop[0, split.item_index([counts.index[0]])[0]] == counts.iloc[0]
    assert (pop == pop[0]).all()


def test_cache_roundtrip_and_keys(tmp_path):
    cache = StageCache(tmp_path)
    k1 = stage_key("s", 1, {"a": 1}, ["x"])
    assert k1 != stage_key("s", 1, {"a": 2}, ["x"]) != stage_key("s", 1, {"a": 1}, ["y"])
    assert k1 != stage_key("s", 2, {"a": 1}, ["x"])
    assert not cache.has("s", k1)
    arts = {"arr": np.arange(6).reshape(2, 3), "df": pd.DataFrame({"a": [1, 2]}),
            "info": {"n": 3}, "model": b"\x00bytes"}
    cache.save("s", k1, arts, {"timing": {"seconds": 1.5}})
    assert cache.has("s", k1)
    back = cache.load("s", k1)
    np.testing.assert_array_equal(back["arr"], arts["arr"])
    assert back["df"].equals(arts["df"]) and back["info"] == {"n": 3}
    assert back["model"] == b"\x00bytes"
    assert not [p for p in (tmp_path / "s").iterdir() if p.name.startswith(".")]


def test_a_failed_save_leaves_no_entry(tmp_path):
    cache = StageCache(tmp_path)

    class Boom:
        def __str__(self):
            raise RuntimeError("cannot serialise")

    with pytest.raises(RuntimeError, match="cannot serialise"):  # the error reaches the caller
        cache.save("s", "k", {"ok": np.zeros(2), "bad": {"x": Boom()}}, {})
    assert not cache.has("s", "k")
    assert list((tmp_path / "s").iterdir()) == []
