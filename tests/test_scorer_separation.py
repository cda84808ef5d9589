"""scripts/scorer_separation.py: the AUC and top-5 share are right on constructed scores, and a
stage cache of two seeds is read back per method and seed, each values stage with its own
requests and pool."""

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.cache import StageCache

SCRIPT = Path(__file__).parent.parent / "scripts" / "scorer_separation.py"
spec = importlib.util.spec_from_file_location("scorer_separation", SCRIPT)
sep = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sep)


def test_separation_on_constructed_scores():
    on = np.array([True, True, False, False, False, False, True])
    assert sep.separation(on, np.array([7, 6, 5, 4, 3, 2, 1.0])) == pytest.approx((2 / 3, 0.4))
    assert sep.separation(on, np.where(on, 2.0, 1.0)) == (1.0, 0.6)
    assert sep.separation(on, np.ones(7))[0] == 0.5  # ties count half
    assert np.isnan(sep.separation(np.ones(3, bool), np.arange(3.0))[0])


def test_a_two_seed_cache_is_read_per_method_and_seed(tmp_path):
    sc = StageCache(tmp_path)
    items = pd.DataFrame({"item_id": [1, 2, 3, 4], "text": list("abcd"),
                          "Drama": [1, 0, 1, 0], "Comedy": [0, 1, 0, 1]})
    sc.save("dataset", "d", {"items": items}, {"label": "dataset", "deps": [], "inputs": []})
    for seed, genre in ((0, "Drama"), (1, "Comedy")):
        sfx = "" if seed == 0 else f"@s{seed}"
        sc.save("requests", f"r{seed}", {"requests": pd.DataFrame(
            {"user_id": [5], "genre": [genre], "text": [f"some {genre}"]})},
            {"label": "requests" + sfx, "deps": ["dataset"], "inputs": ["d"]})
        sc.save("pool", f"p{seed}", {"pool": np.array([[True, True, True, False]])},
                {"label": "pool" + sfx, "deps": ["dataset", "engagement", "requests"],
                 "inputs": ["d", "e", f"r{seed}"]})
        sc.save("values", f"v{seed}", {"values": np.array([[4.0, 3.0, 2.0, 9.0]], np.float32)},
                {"label": "values[direct,none]" + sfx, "deps": ["dataset", "requests", "pool"],
                 "inputs": ["d", f"r{seed}", f"p{seed}"]})
    runs = {seed: (label, req.genre[0], sep.separation(
        items[req.genre[0]].to_numpy()[:3].astype(bool), values[0, :3]))
        for label, seed, values, req, pool, items in sep.cached_runs(tmp_path)}
    # Drama = items 1 and 3 of the pool (scores 4, 2) against item 2 (3): AUC 0.5;
    # Comedy = item 2 alone (3) against 4 and 2: AUC 0.5 too, but a top 5 share of 1/3
    assert runs == {"s0": ("values[direct,none]", "Drama", (0.5, pytest.approx(2 / 3))),
                    "s1": ("values[direct,none]", "Comedy", (0.5, pytest.approx(1 / 3)))}
