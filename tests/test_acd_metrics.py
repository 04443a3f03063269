"""AUC and macro-F1 against scikit-learn and hand-computed values."""
import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from epi_utils.acd.metrics import episode_auc, episode_macro_f1, instance_f1, per_class_f1

Y = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [0, 1, 1], [1, 0, 0]])
S = np.array([[.7, .2, .1], [.4, .4, .2], [.1, .8, .1], [.3, .3, .4], [.2, .5, .3], [.3, .5, .2]])


def test_auc_matches_sklearn_including_ties():
    assert episode_auc(Y, S) == pytest.approx(roc_auc_score(Y, S, average="macro"))
    rng = np.random.default_rng(0)
    for _ in range(20):
        y = (rng.random((25, 5)) < 0.3).astype(int)
        y[0], y[1] = 1, 0
        s = np.round(rng.random((25, 5)), 1)  # many ties
        assert episode_auc(y, s) == pytest.approx(roc_auc_score(y, s, average="macro"))


def test_auc_by_hand():
    # class 0: positives .7 .4 .3 vs negatives .1 .3 .2 -> pairs won 3+2+1.5 = ... computed: 8.5/9
    assert episode_auc(Y[:, :1], S[:, :1]) == pytest.approx(8.5 / 9)


def test_macro_f1_matches_sklearn_and_hand():
    P = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 1, 1], [0, 1, 0], [0, 1, 0]])
    assert episode_macro_f1(Y, P) == pytest.approx(f1_score(Y, P, average="macro", zero_division=0))
    # class 0: tp2 fp0 fn1 -> 0.8; class 1: tp2 fp2 fn1 -> 4/7; class 2: tp1 fp0 fn1 -> 2/3
    assert per_class_f1(Y, P) == pytest.approx([0.8, 4 / 7, 2 / 3])
    assert episode_macro_f1(Y, P) == pytest.approx((0.8 + 4 / 7 + 2 / 3) / 3)
    rng = np.random.default_rng(1)
    for _ in range(20):
        y, p = (rng.random((30, 10)) < 0.2), (rng.random((30, 10)) < 0.2)
        assert episode_macro_f1(y, p) == pytest.approx(f1_score(y, p, average="macro", zero_division=0))


def test_instance_f1_by_hand():
    y = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 1]])
    p = np.array([[1, 0, 0], [1, 1, 1], [0, 0, 1]])
    assert instance_f1(y, p) == pytest.approx([2 / 3, 0.5, 1.0])
