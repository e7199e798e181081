"""The linear reference models: scikit-learn's solutions, fitted on train only, chosen on development."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import Ridge
from sklearn.svm import LinearSVR

from serdistill.method.metrics import ccc
from serdistill.method.reference import RIDGE_ALPHAS, SVR_CS, LinearReference
from serdistill.data.storage import disk_matrix


def make(n: int, d: int, *, seed: int, noise: float = 1.0):
    rng = np.random.default_rng(seed)
    X = (rng.normal(size=(n, d)) + 0.5).astype(np.float32)
    y = (3 + X[:, :4] @ np.array([1.0, -0.5, 0.25, 0.5]) + noise * rng.normal(size=n)).astype(np.float32)
    return X, y


@pytest.mark.parametrize(("n", "d"), [(60, 150), (300, 40)])  # the dual (n <= d) and the primal solution
def test_ridge_is_sklearns_ridge_fitted_on_the_training_rows_only(n, d):
    X, y = make(n, d, seed=0)
    X_dev, y_dev = make(50, d, seed=1)
    model = LinearReference("ridge").fit(X, y, X_dev, y_dev)
    alpha = model.choice_[0]
    reference = Ridge(alpha=alpha).fit(X.astype(np.float64), y.astype(np.float64))
    np.testing.assert_allclose(model.coef_[0], reference.coef_, rtol=1e-4, atol=1e-6)
    assert model.intercept_[0] == pytest.approx(reference.intercept_, rel=1e-5)
    X_test, _ = make(30, d, seed=2)
    np.testing.assert_allclose(model.predict(X_test)[:, 0], reference.predict(X_test), rtol=1e-4, atol=1e-4)
    # the choice is the development set's: the best CCC among every alpha tried
    scores = [ccc(Ridge(alpha=a).fit(X.astype(np.float64), y).predict(X_dev), y_dev.astype(np.float64))
              for a in RIDGE_ALPHAS]
    assert alpha == RIDGE_ALPHAS[int(np.argmax(scores))]
    assert model.dev_ccc_[0] == pytest.approx(max(scores), abs=1e-6)


def test_the_development_labels_decide_the_penalty():
    X, y = make(60, 150, seed=0)
    X_dev, y_dev = make(50, 150, seed=1)
    light = LinearReference("ridge").fit(X, y, X_dev, y_dev)
    # development labels with a tenth of the spread: CCC then favours predictions shrunk
    # towards the mean, i.e. a heavier penalty
    flat = (y_dev.mean() + 0.1 * (y_dev - y_dev.mean())).astype(np.float32)
    heavy = LinearReference("ridge").fit(X, y, X_dev, flat)
    assert heavy.choice_[0] > light.choice_[0]
    # for a given penalty, only the training rows enter the solution
    np.testing.assert_allclose(heavy.coef_[0], Ridge(alpha=heavy.choice_[0]).fit(X.astype(np.float64), y).coef_,
                               rtol=1e-4, atol=1e-6)


def test_svr_is_sklearns_linear_svr_on_the_training_rows_with_the_development_choice():
    X, y = make(120, 30, seed=3, noise=0.5)
    X_dev, y_dev = make(60, 30, seed=4, noise=0.5)
    model = LinearReference("svr", seed=7).fit(X, y, X_dev, y_dev)
    mean, std = y.astype(np.float64).mean(), y.astype(np.float64).std()

    def fitted(C):
        svr = LinearSVR(C=C, epsilon=0.0, dual=True, max_iter=5000, tol=1e-4, random_state=7)
        with _no_warnings():
            return svr.fit(X.astype(np.float64), (y - mean) / std)

    scores = [ccc(fitted(C).predict(X_dev) * std + mean, y_dev.astype(np.float64)) for C in SVR_CS]
    best = SVR_CS[int(np.argmax(scores))]
    assert model.choice_[0] == best and model.dev_ccc_[0] == pytest.approx(max(scores), abs=1e-6)
    np.testing.assert_allclose(model.predict(X_dev)[:, 0], fitted(best).predict(X_dev) * std + mean, rtol=1e-4, atol=1e-4)


def test_labels_with_gaps_are_fitted_per_column_on_their_rows():
    X, y = make(80, 20, seed=0)
    X_dev, y_dev = make(40, 20, seed=1)
    Y = np.stack([y, y[::-1]], axis=1)
    Y[:10, 1] = np.nan
    Y_dev = np.stack([y_dev, y_dev], axis=1)
    model = LinearReference("ridge").fit(X, Y, X_dev, Y_dev)
    assert model.n_train_ == [80, 70] and model.predict(X).shape == (80, 2)
    alone = LinearReference("ridge").fit(X[10:], Y[10:, 1:], X_dev, Y_dev[:, 1:])
    np.testing.assert_array_equal(model.coef_[1], alone.coef_[0])


def test_features_on_disk_give_the_same_model(tmp_path):
    X, y = make(300, 40, seed=0)
    X_dev, y_dev = make(50, 40, seed=1)
    on_disk = disk_matrix(X.shape, directories=(tmp_path,))
    on_disk[:] = X
    a = LinearReference("ridge").fit(X, y, X_dev, y_dev)
    b = LinearReference("ridge").fit(on_disk, y, X_dev, y_dev)
    np.testing.assert_allclose(a.coef_, b.coef_, rtol=1e-6)


def test_bad_inputs_say_what_is_wrong():
    X, y = make(20, 5, seed=0)
    with pytest.raises(ValueError, match="'kind' parameter of LinearReference"):
        LinearReference("lasso").fit(X, y, X, y)
    y_dev = np.full(20, np.nan, np.float32)
    y_dev[0] = 3.0
    with pytest.raises(ValueError, match="at least 2 labelled training and development rows; got 20 and 1"):
        LinearReference("ridge").fit(X, y, X, y_dev)


class _no_warnings:
    def __enter__(self):
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore")

    def __exit__(self, *exc):
        self._w.__exit__(*exc)
