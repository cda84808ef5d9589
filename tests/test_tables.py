import numpy as np
import pandas as pd
import pytest

from bench.report.statistics import bootstrap_ci, front_area, pareto_front, table1


def test_pareto_front_by_hand():
    x = np.array([0.1, 0.2, 0.3, 0.25, 0.05])
    y = np.array([0.9, 0.8, 0.5, 0.4, 0.95])
    assert pareto_front(x, y).tolist() == [4, 0, 1, 2]     # (0.25, 0.4) is dominated by (0.3, 0.5)
    # staircase: x in (0,.05]: .95; (.05,.1]: .9; (.1,.2]: .8; (.2,.3]: .5; x_max .3
    expected = (0.05 * 0.95 + 0.05 * 0.9 + 0.1 * 0.8 + 0.1 * 0.5) / 0.3
    assert front_area(x, y, 0.3) == pytest.approx(expected)


def test_bootstrap_interval_covers_the_mean_and_shrinks_with_n():
    rng = np.random.default_rng(1)
    small, big = rng.random(30), rng.random(3000)
    lo, hi = bootstrap_ci(small)
    assert lo < small.mean() < hi
    lo2, hi2 = bootstrap_ci(big)
    assert hi2 - lo2 < (hi - lo) / 5


def test_table1_picks_the_best_w_and_compares_with_untrained():
    rows = []
    for u in range(50):
        for w, a, b in ((0.0, 0.2, 0.2), (0.5, 0.6, 0.8), (1.0, 0.7, 0.6)):
            rows.append(("untrained", u, w, a, 0.3))
            rows.append(("direct", u, w, b + (u % 2) * 0.1, 0.3))
    df = pd.DataFrame(rows, columns=["method", "user_id", "w_control", "genre_accuracy",
                                     "precision"]).assign(context="none", aggregation="rank", k=5,
                                                          recall=0.1, ndcg=0.2)
    t = table1(df, "genre_accuracy", 5).set_index("method")
    assert t.loc["untrained", "w_control"] == 1.0 and t.loc["untrained", "max_satisfaction"] == \
        pytest.approx(0.7)
    assert t.loc["direct", "w_control"] == 0.5
    assert t.loc["direct", "max_satisfaction"] == pytest.approx(0.85)
    assert t.loc["direct", "vs_untrained_%"] == pytest.approx(100 * (0.85 / 0.7 - 1))
    assert t.loc["direct", "diff_ci_low"] > 0
    assert t.loc["direct", "ci_low"] < 0.85 < t.loc["direct", "ci_high"]
