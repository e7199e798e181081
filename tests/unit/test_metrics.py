"""CCC (numpy) and the 1 − CCC loss (torch) against the written-out formula and hand values."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from serdistill.method.metrics import CCC_EPS, ccc, ccc_loss, ccc_torch


def ccc_formula(x, y) -> float:
    """Lin's CCC written out term by term in plain Python (population moments)."""
    x, y = [float(v) for v in x], [float(v) for v in y]
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    vx = sum((a - mx) ** 2 for a in x) / n
    vy = sum((b - my) ** 2 for b in y) / n
    cov = sum((a - mx) * (b - my) for a, b in zip(x, y)) / n
    return 2 * cov / (vx + vy + (mx - my) ** 2)


# --- ccc ------------------------------------------------------------------------------


@pytest.mark.parametrize("x, y, expected", [
    ([1, 2, 3], [1, 2, 3], 1.0),
    ([1, 2, 3], [3, 2, 1], -1.0),
    # means 2 and 3, variances 2/3 each, cov 2/3: 2·(2/3) / (2/3 + 2/3 + 1) = 4/7
    ([1, 2, 3], [2, 3, 4], 4 / 7),
    # x = 2y: mean 4 vs 2, var 8/3 vs 2/3, cov 4/3: (8/3) / (8/3 + 2/3 + 4) = 4/11
    ([2, 4, 6], [1, 2, 3], 4 / 11),
    # a single pair of different values: no spread, only the mean gap: 0
    ([1.0], [2.0], 0.0),
    # x constant, y not: cov 0 -> 0
    ([5, 5, 5, 5], [1, 2, 3, 4], 0.0),
])
def test_ccc_hand_values(x, y, expected):
    assert ccc(np.array(x, float), np.array(y, float)) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("n", [2, 7, 100])
def test_ccc_matches_formula(seed, n):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n) * rng.uniform(0.1, 3)
    y = 0.5 * x + rng.normal(size=n) + rng.uniform(-2, 2)
    assert ccc(x, y) == pytest.approx(ccc_formula(x, y), rel=1e-10, abs=1e-12)
    # pearson-like invariances that CCC does *not* have: it punishes a shift and a scale
    assert ccc(x, x + 1.0) < ccc(x, x)
    assert ccc(x, 2.0 * x) < ccc(x, x)


def test_ccc_is_symmetric_and_returns_float():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=50), rng.normal(size=50)
    value = ccc(x, y)
    assert isinstance(value, float)
    assert value == pytest.approx(ccc(y, x), rel=1e-12)


def test_ccc_multi_column_is_per_column():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3))
    y = x * np.array([1.0, 0.5, -1.0]) + rng.normal(scale=0.3, size=(40, 3))
    values = ccc(x, y)
    assert isinstance(values, np.ndarray) and values.shape == (3,)
    for j in range(3):
        assert values[j] == pytest.approx(ccc_formula(x[:, j], y[:, j]), rel=1e-10)
    assert values[2] < 0 < values[1] < values[0]


def test_ccc_undefined_is_nan():
    assert math.isnan(ccc(np.array([]), np.array([])))
    assert math.isnan(ccc(np.full(4, 3.0), np.full(4, 3.0)))  # both constant and equal
    empty = ccc(np.zeros((0, 2)), np.zeros((0, 2)))
    assert empty.shape == (2,) and np.isnan(empty).all()
    # one column undefined, the other not: NaN only where undefined
    x = np.array([[1.0, 1.0], [1.0, 2.0], [1.0, 3.0]])
    values = ccc(x, x.copy())
    assert math.isnan(values[0]) and values[1] == pytest.approx(1.0)


def test_ccc_rejects_nan_and_shape_mismatch():
    with pytest.raises(ValueError, match="NaN"):
        ccc(np.array([1.0, np.nan]), np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="NaN"):
        ccc(np.array([1.0, 2.0]), np.array([np.nan, 2.0]))
    with pytest.raises(ValueError, match="one shape"):
        ccc(np.zeros(3), np.zeros(4))


def test_ccc_torch_agrees_with_numpy():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(30, 2)).astype(np.float32)
    y = (x + rng.normal(size=(30, 2))).astype(np.float32)
    got = ccc_torch(torch.from_numpy(x), torch.from_numpy(y)).numpy()
    np.testing.assert_allclose(got, ccc(x, y), rtol=1e-10)


# --- ccc_loss -------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("shape", [(64,), (64, 1), (64, 3)])
def test_loss_is_one_minus_ccc(seed, shape):
    rng = np.random.default_rng(seed)
    y = rng.normal(loc=4.0, size=shape)
    x = 0.7 * y + rng.normal(scale=0.5, size=shape) + 0.3
    loss = ccc_loss(torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64))
    expected = 1.0 - np.mean(ccc(x, y))
    # eps = 1e-6 in a denominator of O(1): a relative change of about 1e-6
    assert float(loss) == pytest.approx(expected, abs=5e-6)
    assert float(loss) != pytest.approx(float(np.mean(ccc(x, y))), abs=1e-3)  # not CCC itself


def test_loss_without_eps_is_exact():
    rng = np.random.default_rng(3)
    y, x = rng.normal(size=20), rng.normal(size=20)
    loss = ccc_loss(torch.tensor(x), torch.tensor(y), eps=0.0)
    assert float(loss) == pytest.approx(1.0 - ccc_formula(x, y), rel=1e-12)


def _loss_and_grad(prediction, target):
    p = torch.tensor(prediction, dtype=torch.float32, requires_grad=True)
    loss = ccc_loss(p, torch.tensor(target, dtype=torch.float32))
    loss.backward()
    return float(loss.detach()), p.grad


@pytest.mark.parametrize("prediction, target", [
    ([2.0], [5.0]),  # a batch of one
    ([3.0], [3.0]),  # a batch of one, exact
    ([1.0, 1.0, 1.0], [2.0, 2.0, 2.0]),  # all constant
    ([2.0, 2.0, 2.0, 2.0], [2.0, 2.0, 2.0, 2.0]),  # constant and equal (CCC undefined)
    ([0.1, 0.5, 0.9], [4.0, 4.0, 4.0]),  # constant labels
    ([[1.0, 2.0]], [[1.5, 2.0]]),  # one row, two outputs
])
def test_loss_finite_on_degenerate_batches(prediction, target):
    loss, grad = _loss_and_grad(prediction, target)
    assert math.isfinite(loss)
    assert loss == pytest.approx(1.0, abs=1e-6)  # nothing co-varies
    assert grad is not None and torch.isfinite(grad).all()


def test_loss_gradient_bounded_on_tiny_spread():
    # near-degenerate: spread far below sqrt(eps); the gradient stays finite and moderate
    loss, grad = _loss_and_grad([1.0, 1.0 + 1e-5], [1.0, 1.0 + 1e-5])
    assert math.isfinite(loss) and torch.isfinite(grad).all()
    assert float(grad.abs().max()) < 1e3


def test_loss_decreases_towards_labels():
    y = torch.tensor([1.0, 2.0, 3.0, 4.0])
    p = torch.zeros(4, requires_grad=True)
    opt = torch.optim.SGD([p], lr=0.5)
    first = None
    for _ in range(200):
        loss = ccc_loss(p, y)
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first == pytest.approx(1.0)
    assert float(ccc_loss(p.detach(), y)) < 0.05


def test_loss_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="one shape"):
        ccc_loss(torch.zeros(4), torch.zeros(4, 1))


def test_eps_is_small():
    assert 0 < CCC_EPS <= 1e-5
