"""Continual-learning metrics against hand-computed matrices."""
import numpy as np
import pytest

from epi_utils.epi import continual

# R[i, j]: accuracy on task j after stage i. Note R[1, 0] = 0.95 > R[0, 0]: the max-based
# forgetting (Chaudhry et al. 2018) uses 0.95, backward transfer uses the diagonal 0.9.
R = np.array([[0.90, 0.10, 0.20],
              [0.95, 0.80, 0.30],
              [0.50, 0.70, 0.95]])


def test_average_accuracy():
    assert continual.average_accuracy(R) == pytest.approx((0.5 + 0.7 + 0.95) / 3)   # 0.71667


def test_backward_transfer():
    # ((0.5 - 0.9) + (0.7 - 0.8)) / 2 = -0.25
    assert continual.backward_transfer(R) == pytest.approx(-0.25)


def test_forward_transfer():
    # b = [0.1, 0.0, 0.1]: ((0.1 - 0.0) + (0.3 - 0.1)) / 2 = 0.15
    assert continual.forward_transfer(R, [0.1, 0.0, 0.1]) == pytest.approx(0.15)


def test_forgetting_uses_max_over_earlier_stages():
    # j=0: max(0.9, 0.95) - 0.5 = 0.45; j=1: max(0.1, 0.8) - 0.7 = 0.1; mean = 0.275
    assert continual.forgetting(R) == pytest.approx(0.275)
    R2 = np.array([[0.5, 0.0], [0.2, 0.9]])
    assert continual.forgetting(R2) == pytest.approx(0.3)
    assert continual.backward_transfer(R2) == pytest.approx(-0.3)


def test_single_stage_and_bad_shapes():
    assert continual.forgetting([[0.7]]) == 0.0
    assert continual.backward_transfer([[0.7]]) == 0.0
    assert continual.average_accuracy([[0.7]]) == pytest.approx(0.7)
    with pytest.raises(ValueError, match="square"):
        continual.average_accuracy(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="baseline"):
        continual.forward_transfer(R, [0.1, 0.2])


def test_accuracy_matrix_from_stage_end_eval():
    evals = [{"a": 1.0, "b": 0.5, "c": 0.0}, {"a": 0.5, "b": 1.0, "c": 1.0}]
    M = continual.accuracy_matrix(evals, [("a", "b"), ("c",)])
    np.testing.assert_allclose(M, [[0.75, 0.0], [0.75, 1.0]])
    with pytest.raises(KeyError, match="no accuracy"):
        continual.accuracy_matrix([{"a": 1.0}, {"a": 1.0}], [("a",), ("zzz",)])
