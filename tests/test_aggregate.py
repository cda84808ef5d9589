import numpy as np
import pytest

from ctrlrec import aggregate as A

ENG = np.array([[4.0, 3.0, 2.0, 1.0, 0.0]])
REQ = np.array([[0.0, 0.1, 0.2, 0.9, 0.3]])
ALL = np.ones_like(ENG, dtype=bool)


def test_rank01_ignores_non_candidates_and_averages_ties():
    cand = np.array([[True, True, False, True, True]])
    r = A.rank01(np.array([[5.0, 1.0, 99.0, 3.0, 3.0]]), cand)
    assert np.isnan(r[0, 2])
    np.testing.assert_allclose(r[0, [0, 1, 3, 4]], [1.0, 0.0, 0.5, 0.5])


def test_rank_rule_by_hand():
    e, r = A.normalise("rank", ENG, REQ, ALL)
    np.testing.assert_allclose(e, [[1, 0.75, 0.5, 0.25, 0]])
    np.testing.assert_allclose(r, [[0, 0.25, 0.5, 1, 0.75]])
    np.testing.assert_allclose(A.combine("rank", e, r, 0.8), [[0.2, 0.35, 0.5, 0.85, 0.6]])


def test_minmax_rule_by_hand():
    e, r = A.normalise("minmax", ENG, REQ, ALL)
    np.testing.assert_allclose(r, [[0, 1 / 9, 2 / 9, 1, 3 / 9]])
    np.testing.assert_allclose(A.combine("minmax", e, r, 0.5)[0, 0], 0.5)


def test_threshold_rule_keeps_request_matches_then_orders_by_engagement():
    e, r = A.normalise("threshold", ENG, REQ, ALL)
    # w = 0.5: items with request rank >= 0.5 are 2, 3, 4; among them engagement order 2, 3, 4
    top = A.top_k(A.combine("threshold", e, r, 0.5), 5)
    assert top[0].tolist() == [2, 3, 4, 1, 0]


def test_multiplicative_rule_by_hand():
    e, r = A.normalise("multiplicative", ENG, REQ, ALL)
    s = A.combine("multiplicative", e, r, 0.5)
    np.testing.assert_allclose(s, np.sqrt((1 + e) * (1 + r)))


@pytest.mark.parametrize("rule", A.RULES)
def test_every_rule_interpolates_between_engagement_and_request(rule):
    tops = A.sweep(rule, ENG, REQ, ALL, [0.0, 1.0], 2)
    assert tops[0, 0].tolist() == [0, 1]          # w = 0: engagement order
    assert tops[1, 0, 0] == 3                     # w = 1: best request match first


@pytest.mark.parametrize("rule", A.RULES)
def test_train_items_are_never_recommended(rule):
    rng = np.random.default_rng(0)
    eng, req = rng.random((20, 30)), rng.random((20, 30))
    cand = rng.random((20, 30)) > 0.3
    tops = A.sweep(rule, eng, req, cand, [0.0, 0.3, 0.7, 1.0], 5)
    assert np.take_along_axis(np.broadcast_to(cand, (4, 20, 30)), tops, axis=2).all()


@pytest.mark.parametrize("rule", A.RULES)
def test_a_row_with_fewer_candidates_than_k_is_refused_not_filled_with_train_items(rule):
    # 3 candidates of 10 items: a top-5 could only be filled with items seen in train
    rng = np.random.default_rng(0)
    eng, req = rng.random((2, 10)), rng.random((2, 10))
    cand = np.zeros((2, 10), dtype=bool)
    cand[0, [1, 4, 7]] = True
    cand[1, :6] = True
    with pytest.raises(A.TooFewCandidates, match=r"top-5 asked of 1 row.*\(row 0: 3\)") as err:
        A.sweep(rule, eng, req, cand, [0.0, 1.0], 5)
    assert err.value.rows.tolist() == [0] and err.value.counts.tolist() == [3]
    tops = A.sweep(rule, eng, req, cand, [0.0, 1.0], 3)  # k within every row: candidates only
    assert np.take_along_axis(np.broadcast_to(cand, (2, 2, 10)), tops, axis=2).all()
    assert sorted(tops[0, 0]) == [1, 4, 7]


def test_a_candidate_scored_minus_infinity_still_beats_every_non_candidate():
    top = A.top_k(np.array([[np.nan, -np.inf, np.nan, 2.0]]), 2)
    assert top[0].tolist() == [3, 1]


def test_ties_go_to_the_more_engaging_item():
    top = A.top_k(np.array([[0.5, 0.5, 0.5, 0.1]]), 2, tiebreak=np.array([[0.0, 1.0, 0.5, 0.9]]))
    assert top[0].tolist() == [1, 2]


def test_unknown_rule_names_the_allowed_ones():
    with pytest.raises(ValueError, match="allowed: rank, minmax, threshold, multiplicative"):
        A.normalise("sum", ENG, REQ, ALL)
