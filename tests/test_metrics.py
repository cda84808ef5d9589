import numpy as np

from ctrlrec import metrics as M

# Two users, six items. User 0 liked items 1, 3, 5; user 1 liked item 0 only.
REL = np.array([[0, 1, 0, 1, 0, 1],
                [1, 0, 0, 0, 0, 0]], dtype=bool)
TOP = np.array([[1, 2, 3],
                [4, 5, 0]])


def test_precision_and_recall_by_hand():
    np.testing.assert_allclose(M.precision_at_k(TOP, REL), [2 / 3, 1 / 3])
    np.testing.assert_allclose(M.recall_at_k(TOP, REL), [2 / 3, 1.0])


def test_ndcg_by_hand():
    # user 0: hits at ranks 1 and 3 -> (1 + 1/log2(4)) / (1 + 1/log2(3) + 1/log2(4))
    u0 = (1 + 0.5) / (1 + 1 / np.log2(3) + 0.5)
    # user 1: one hit at rank 3 -> (1/log2(4)) / 1
    np.testing.assert_allclose(M.ndcg_at_k(TOP, REL), [u0, 0.5])


def test_user_without_relevant_items_scores_zero():
    rel = np.zeros((1, 4), dtype=bool)
    top = np.array([[0, 1]])
    assert M.recall_at_k(top, rel)[0] == 0 and M.ndcg_at_k(top, rel)[0] == 0


def test_genre_accuracy_by_hand():
    genres = np.array([[1, 0], [1, 1], [0, 1], [0, 0], [1, 0], [0, 1]], dtype=bool)
    requested = np.array([0, 1])
    # user 0 asks genre 0: items 1 (yes), 2 (no), 3 (no); user 1 asks genre 1: 4 no, 5 yes, 0 no
    np.testing.assert_allclose(M.genre_accuracy_at_k(TOP, genres, requested), [1 / 3, 1 / 3])


def test_mean_and_standard_error():
    mean, se = M.mean_se(np.array([1.0, 2.0, 3.0, 4.0]))
    assert mean == 2.5
    np.testing.assert_allclose(se, np.std([1, 2, 3, 4], ddof=1) / 2)
