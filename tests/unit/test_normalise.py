"""The z-score normaliser: hand-computed values, constant features, clipping, NaN, state."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from serdistill.base.errors import ConfigError, NotFittedError
from serdistill.data.features import FeatureError
from serdistill.data.normalise import Normaliser

# Column 0: 1, 3 -> mean 2, std 1.  Column 1: 10, 30 -> mean 20, std 10.  Column 2: constant 5.
TRAIN = np.array([[1.0, 10.0, 5.0], [3.0, 30.0, 5.0]], dtype=np.float32)
OTHER = np.array([[2.0, 40.0, 5.0], [4.0, 20.0, 1e30], [-100.0, 0.0, -7.0]], dtype=np.float32)


def test_hand_computed_statistics_and_z_scores() -> None:
    normaliser = Normaliser().fit(TRAIN)
    np.testing.assert_array_equal(normaliser.mean_, [2.0, 20.0, 5.0])
    np.testing.assert_array_equal(normaliser.scale_, [1.0, 10.0, 1.0])
    np.testing.assert_array_equal(normaliser.constant_, [False, False, True])
    np.testing.assert_array_equal(normaliser.transform(TRAIN), [[-1, -1, 0], [1, 1, 0]])
    z = normaliser.transform(OTHER)
    assert z.dtype == np.float32
    # -100 is 102 std below the mean: clipped to -10. The constant column is 0, even for 1e30.
    np.testing.assert_array_equal(z, [[0, 2, 0], [2, 0, 0], [-10, -2, 0]])


@pytest.mark.parametrize("clip, expected", [(None, -102.0), (10, -10.0), (2.5, -2.5), (200.0, -102.0)])
def test_clip_bounds_the_z_scores(clip: float | None, expected: float) -> None:
    z = Normaliser(clip=clip).fit(TRAIN).transform(OTHER)
    assert z[2, 0] == expected
    assert z[0, 1] == min(2.0, clip or np.inf)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_statistics_are_population_moments_computed_in_float64(dtype, rng: np.random.Generator) -> None:
    # More rows than one block, a large offset and a small spread: float32 sums would drift.
    X = (1e4 + rng.normal(0, 0.5, size=(5000, 4))).astype(dtype)
    normaliser = Normaliser(clip=None).fit(X)
    reference = X.astype(np.float64)
    np.testing.assert_allclose(normaliser.mean_, reference.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(normaliser.scale_, reference.std(axis=0, ddof=0), rtol=1e-9)
    z = normaliser.transform(X)
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(z.std(axis=0), 1, atol=1e-4)


@pytest.mark.parametrize("value, steps", [(0.0, 0), (7.25, 0), (7.25, 1), (-3e8, 2), (123456.789, 1)])
def test_constant_and_rounding_level_features_give_zero_not_nan(value: float, steps: int) -> None:
    column = np.full(6, value, dtype=np.float32)
    for _ in range(steps):  # a few float32 rounding steps apart: still constant
        column[0] = np.nextafter(column[0], np.float32(np.inf))
    X = np.stack([column, np.arange(6, dtype=np.float32)], axis=1)
    normaliser = Normaliser().fit(X)
    assert normaliser.constant_.tolist() == [True, False]
    z = normaliser.transform(np.array([[value, 2.5], [1e38, 0.0], [-1e38, 5.0]], dtype=np.float32))
    assert np.isfinite(z).all()
    np.testing.assert_array_equal(z[:, 0], 0)


def test_nan_in_a_training_column_is_named() -> None:
    X = pd.DataFrame(TRAIN, columns=["pcm_loudness", "F0_mean", "jitter"])
    X.iloc[1, 1] = np.nan
    with pytest.raises(FeatureError, match=r"1 feature\(s\) hold NaN or infinity .* F0_mean \(1 value\(s\)\)"):
        Normaliser().fit(X)
    Y = TRAIN.copy()
    Y[0, 2] = np.inf
    with pytest.raises(FeatureError, match=r"column 2 \(1 value\(s\)\)"):
        Normaliser().fit(Y)


def test_nan_rows_and_wrong_width_in_transform_are_errors() -> None:
    normaliser = Normaliser().fit(TRAIN)
    bad = OTHER.copy()
    bad[1, 0] = np.nan
    with pytest.raises(FeatureError, match=r"1 row\(s\) .* hold NaN or infinity \(rows 1\)"):
        normaliser.transform(bad)
    with pytest.raises(FeatureError, match="got 2 features per row; expected 3"):
        normaliser.transform(TRAIN[:, :2])


@pytest.mark.parametrize("X", [np.zeros((0, 3)), np.zeros(3), np.array([["a", "b"]])])
def test_unusable_training_arrays(X: np.ndarray) -> None:
    with pytest.raises(FeatureError, match="Normaliser.fit got"):
        Normaliser().fit(X)


@pytest.mark.parametrize("clip", [0, -1.0, np.inf, "10", True])
def test_invalid_clip(clip) -> None:
    with pytest.raises(ConfigError, match="The 'clip' parameter of Normaliser must be a positive number or None"):
        Normaliser(clip=clip).fit(TRAIN)


def test_not_fitted() -> None:
    with pytest.raises(NotFittedError, match="not fitted"):
        Normaliser().transform(TRAIN)


@pytest.mark.parametrize("clip", [None, 10.0])
def test_state_round_trips_through_json(clip: float | None, rng: np.random.Generator) -> None:
    X = pd.DataFrame(rng.normal(3, 2, size=(50, 5)).astype(np.float32), columns=list("abcde"))
    X["c"] = 1.5
    fitted = Normaliser(clip=clip).fit(X)
    restored = Normaliser.from_dict(json.loads(json.dumps(fitted.to_dict())))
    assert restored.feature_names_in_ == list("abcde") and restored.clip == clip
    probe = rng.normal(3, 40, size=(20, 5)).astype(np.float32)
    np.testing.assert_array_equal(restored.transform(probe), fitted.transform(probe))
    with pytest.raises(FeatureError, match="state version"):
        Normaliser.from_dict({**fitted.to_dict(), "version": 99})
