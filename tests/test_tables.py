import numpy as np
import pandas as pd
import pytest

from bench.report import statistics
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


def test_cluster_bootstrap_with_one_user_per_cluster_is_the_user_bootstrap():
    from scipy import stats

    v = np.random.default_rng(2).random(80)
    users = np.arange(100, 180)
    alone = pd.Series([f"text {u}" for u in users], index=users)  # every user its own request
    assert bootstrap_ci(v, 2000, 7, users, alone) == bootstrap_ci(v, 2000, 7)
    ref = stats.bootstrap((v,), np.mean, n_resamples=2000, method="percentile",
                          rng=np.random.default_rng(7)).confidence_interval
    assert bootstrap_ci(v, 2000, 7) == pytest.approx((ref.low, ref.high), abs=1e-12)


def test_cluster_bootstrap_of_copies_is_the_bootstrap_of_the_originals_and_wider():
    v = np.random.default_rng(3).random(30)
    copies, users = np.repeat(v, 5), np.arange(150)
    clusters = pd.Series(users // 5, index=users)  # five users, one request, one answer
    naive = bootstrap_ci(copies, 2000, 0)
    lo, hi = bootstrap_ci(copies, 2000, 0, users, clusters)
    assert (lo, hi) == pytest.approx(bootstrap_ci(v, 2000, 0), abs=1e-12)
    assert hi - lo > 1.8 * (naive[1] - naive[0])  # about sqrt(5) wider
    assert statistics.n_clusters(users, clusters) == 30


def test_cluster_sign_flip_p_is_valid_under_the_null_where_the_user_test_is_not():
    # 10 requests of 5 users each; a request's shared answer moves all its users together
    # (symmetric around 0: no true difference)
    rng = np.random.default_rng(4)
    users = np.arange(50)
    clusters = pd.Series(users // 5, index=users)
    p_cluster, p_user = [], []
    for _ in range(300):
        diff = np.repeat(rng.normal(0, 1, 10), 5) + rng.normal(0, 0.3, 50)
        p_cluster.append(statistics.sign_flip_p(diff, 10000, 0, users, clusters))  # exact: 2^10
        p_user.append(statistics.sign_flip_p(diff, 1000, 0))
    p_cluster, p_user = np.array(p_cluster), np.array(p_user)
    for alpha in (0.05, 0.2, 0.5):  # roughly uniform: rejects about alpha of the time (±3 se)
        assert abs((p_cluster <= alpha).mean() - alpha) < 3 * np.sqrt(alpha * (1 - alpha) / 300)
    assert (p_user <= 0.05).mean() > 0.2  # users as independent: far too many rejections
    assert statistics.sign_flip_p(np.full(20, 0.3), 10000, 0, np.arange(20),
                       pd.Series(np.arange(20) // 10, index=np.arange(20))) == 0.5  # 2 clusters


def test_cluster_se_is_the_user_se_with_one_user_per_cluster_and_larger_for_copies():
    from bench.report.tables import cells_table

    rng = np.random.default_rng(5)
    users = np.arange(60)
    df = pd.DataFrame({"user_id": users, "genre_accuracy": np.repeat(rng.random(12), 5),
                       "method": "m", "context": "none", "aggregation": "rank",
                       "w_control": 0.5, "k": 5})
    cells = cells_table(df, "h")
    plain = statistics.cluster_se(df, ["genre_accuracy"], statistics.Resampling())
    assert plain.se.iloc[0] == pytest.approx(cells.se.iloc[0])
    grouped = statistics.Resampling("request", pd.Series(users // 5, index=users))
    se = statistics.cluster_se(df, ["genre_accuracy"], grouped).se.iloc[0]
    assert se == pytest.approx(np.std(df.genre_accuracy.iloc[::5], ddof=1) / np.sqrt(12))
