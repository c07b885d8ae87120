"""aic / bic / select_model: the seeds' formulas, vectorized over candidates, errors."""
import numpy as np
import pytest
import scipy.stats as st

import fastnorm.functional as fn


def test_formulas_on_a_fitted_gaussian():
    # ln L of a normal fitted by maximum likelihood (k = 2: mean and std)
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, 500)
    mu, sd = st.norm.fit(x)
    ll = st.norm.logpdf(x, mu, sd).sum()
    assert fn.aic(ll, 2) == pytest.approx(2 * 2 - 2 * ll, rel=1e-15)
    assert fn.bic(ll, 2, x.size) == pytest.approx(2 * np.log(500) - 2 * ll, rel=1e-15)
    assert isinstance(fn.aic(ll, 2), np.float64)


def test_vectorized_over_candidates_and_broadcasting():
    ll = np.array([-120.0, -100.0, -99.0, -98.9])
    k = np.array([1, 3, 5, 9])
    np.testing.assert_array_equal(fn.aic(ll, k), 2 * k - 2 * ll)
    np.testing.assert_array_equal(fn.bic(ll, k, 50), k * np.log(50) - 2 * ll)
    grid = fn.bic(ll[:, None], k[:, None], np.array([10, 100, 1000]))  # candidates x sample sizes
    assert grid.shape == (4, 3)
    np.testing.assert_allclose(grid[:, 2], k * np.log(1000) - 2 * ll)
    np.testing.assert_array_equal(fn.aic(ll.astype(np.float32), k), 2 * k - 2 * ll.astype(np.float32).astype(np.float64))


def test_select_model_picks_the_smallest_score():
    ll = np.array([-120.0, -100.0, -99.0, -98.9])
    k = np.array([1, 3, 5, 9])
    best, scores = fn.select_model(ll, k)
    assert best == 1 and best == int(np.argmin(2 * k - 2 * ll))
    np.testing.assert_array_equal(scores, fn.aic(ll, k))
    # BIC penalizes parameters more: with more samples it prefers fewer parameters
    assert fn.select_model([-100.0, -97.5], [2, 4], criterion="aic")[0] == 1
    assert fn.select_model([-100.0, -97.5], [2, 4], 1000, criterion="bic")[0] == 0
    assert fn.select_model([np.nan, -50.0, -50.0], [1, 2, 2])[0] == 1  # NaN never wins; ties: first


def test_errors():
    with pytest.raises(TypeError, match="log_likelihood must be a float32 or float64"):
        fn.aic(np.array([1, 2]), 1)
    with pytest.raises(TypeError, match="k must be a number"):
        fn.aic([-1.0], np.array([True]))
    with pytest.raises(ValueError, match="k must be non-negative"):
        fn.aic([-1.0], -1)
    with pytest.raises(ValueError, match="n must be positive"):
        fn.bic([-1.0], 1, 0)
    with pytest.raises(ValueError, match="must broadcast"):
        fn.aic([-1.0, -2.0], [1, 2, 3])
    with pytest.raises(ValueError, match="needs n"):
        fn.select_model([-1.0], [1], criterion="bic")
    with pytest.raises(ValueError, match="criterion"):
        fn.select_model([-1.0], [1], criterion="hqic")
    with pytest.raises(ValueError, match="non-NaN"):
        fn.select_model([np.nan], [1])
    with pytest.raises(ValueError, match="1-D"):
        fn.select_model(np.zeros((2, 2)), 1)
