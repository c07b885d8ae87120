"""entropy / kl_div / cross_entropy / js_div and wasserstein_1d: SciPy as the oracle, edge
values, layouts, bad inputs, and bitwise equality across backends and thread counts."""
import numpy as np
import pytest
import scipy.special as sps
import scipy.stats as st
from scipy.spatial.distance import jensenshannon

import fastnorm
import fastnorm.functional as fn
from fastnorm import _dispatch
from fastnorm.kernels.numba import divergence as nk

from conftest import LAYOUTS

OPS = ("entropy", "kl_div", "cross_entropy", "js_div")
HUGE = (600, 1037)  # above numba's parallel threshold; n % 32 != 0; more rows than chunks
assert HUGE[0] * HUGE[1] > _dispatch.NUMBA_PARALLEL_MIN_WORK


def scipy_op(op, p, q, axis=-1, base=None):
    """Our op computed by SciPy, in float64."""
    p = np.asarray(p, np.float64)
    q = None if q is None else np.asarray(q, np.float64)
    with np.errstate(all="ignore"):
        if op == "entropy":
            return st.entropy(p, axis=axis, base=base)
        if op == "kl_div":
            return st.entropy(p, q, axis=axis, base=base)
        if op == "cross_entropy":
            return st.entropy(p, axis=axis, base=base) + st.entropy(p, q, axis=axis, base=base)
        return jensenshannon(p, q, axis=axis, base=base) ** 2


def numpy_op(op, p, q, axis=-1, base=None):
    """Our own float64 reference, straight from the formulas (no SciPy)."""
    p = np.asarray(p, np.float64)
    p = p / p.sum(axis, keepdims=True)
    if q is not None:
        q = np.asarray(q, np.float64)
        q = q / q.sum(axis, keepdims=True)
    with np.errstate(all="ignore"):
        if op == "entropy":
            r = -np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0).sum(axis)
        elif op == "kl_div":
            r = np.where(p > 0, p * np.log(p / q), 0).sum(axis)
        elif op == "cross_entropy":
            r = np.where(p > 0, -p * np.log(q), 0).sum(axis)
        else:
            m = (p + q) / 2
            r = 0.5 * (np.where(p > 0, p * np.log(p / m), 0) + np.where(q > 0, q * np.log(q / m), 0)).sum(axis)
    return r / np.log(base) if base is not None else r


def call(op, p, q, **kw):
    return getattr(fn, op)(p, **kw) if op == "entropy" else getattr(fn, op)(p, q, **kw)


def tol(dtype):
    return 2e-6 if np.dtype(dtype) == np.float32 else 1e-13


def inputs(shape, dtype, seed=0, zeros=True):
    rng = np.random.default_rng(seed)
    p = rng.random(shape)
    q = rng.random(shape)
    if zeros:
        p[p < 0.1] = 0.0   # zeros in p (0 log 0), and where both are 0
        q[(q < 0.1) & (p == 0)] = 0.0
    return p.astype(dtype), q.astype(dtype)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("axis", [-1, 0, 1])
@pytest.mark.parametrize("base", [None, 2.0])
def test_matches_scipy_and_numpy(backend, dtype, op, axis, base):
    p, q = inputs((4, 37, 5), dtype)
    got = call(op, p, q, axis=axis, base=base)
    want = scipy_op(op, p, q, axis=axis, base=base)
    assert got.shape == want.shape and got.dtype == dtype
    np.testing.assert_allclose(got, want, rtol=tol(dtype), atol=tol(dtype))
    np.testing.assert_allclose(got, numpy_op(op, p, q, axis=axis, base=base), rtol=tol(dtype), atol=tol(dtype))


def test_js_div_is_square_of_scipy_jensenshannon(backend):
    p, q = inputs((3, 50), np.float64, seed=3)
    np.testing.assert_allclose(np.sqrt(fn.js_div(p, q)), jensenshannon(p, q, axis=-1), rtol=1e-13)
    np.testing.assert_allclose(fn.js_distance(p, q, base=2), jensenshannon(p, q, base=2, axis=-1), rtol=1e-13)
    assert fn.js_div([1.0, 0.0], [0.0, 1.0], base=2) == 1.0


def test_one_d_returns_scalar_and_entropy_with_q_is_kl(backend, dtype):
    p, q = inputs((41,), dtype, seed=1)
    h = fn.entropy(p)
    assert np.ndim(h) == 0 and h.dtype == dtype
    np.testing.assert_allclose(h, st.entropy(p.astype(np.float64)), rtol=tol(dtype))
    assert fn.entropy(p, q) == fn.kl_div(p, q)


def test_unnormalized_inputs_are_normalized(backend):
    p, q = inputs((3, 20), np.float64, seed=2, zeros=False)
    for op in OPS:
        np.testing.assert_allclose(call(op, 7.5 * p, 0.01 * q), call(op, p, q), rtol=1e-13)


def test_zero_and_negative_semantics(backend, dtype):
    # q = 0 < p: inf; p = 0 (any q >= 0): contributes 0; an all-zero row: NaN (0/0)
    p = np.array([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 0.0], [1.0, -1.0, 2.0]], dtype)
    q = np.array([[0.5, 0.0, 0.5], [0.5, 0.5, 0.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]], dtype)
    kl = fn.kl_div(p, q)
    assert kl[0] == np.inf and kl[1] == 0.0 and np.isnan(kl[2]) and kl[3] == np.inf
    np.testing.assert_array_equal(kl, scipy_op("kl_div", p, q).astype(dtype))
    h = fn.entropy(p)
    np.testing.assert_array_equal(h[[0, 1]], np.array([np.log(2)] * 2, dtype))
    assert np.isnan(h[2]) and h[3] == -np.inf
    assert np.isnan(st.entropy(p[2])) and st.entropy(p[3]) == -np.inf
    ce = fn.cross_entropy(p, q)
    assert ce[0] == np.inf and np.isnan(ce[2]) and np.isnan(ce[3])
    np.testing.assert_allclose(ce[1], np.log(2), rtol=tol(dtype))
    js = fn.js_div(p, q)
    assert np.isfinite(js[0]) and js[1] == 0.0
    np.testing.assert_allclose(js[:2], scipy_op("js_div", p[:2], q[:2]), rtol=tol(dtype), atol=tol(dtype))


def test_nan_stays_in_its_row(backend, dtype):
    p, q = inputs((4, 40), dtype, seed=4)
    p[1, 3] = np.nan
    q[2, 7] = np.nan
    for op in OPS:
        r = call(op, p, q)
        ref = scipy_op(op, p, q)
        assert np.array_equal(np.isnan(r), np.isnan(ref)), op
        assert np.isnan(r[1]) and np.isfinite(r[[0, 3]]).all()


def test_tiny_and_subnormal_entries(backend):
    p = np.array([[1e-310, 1.0, 1e-300, 5e-324], [1e-200, 1e-200, 1e-200, 1e-200]])
    q = np.array([[1.0, 1e-310, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    for op in OPS:
        np.testing.assert_allclose(call(op, p, q), scipy_op(op, p, q), rtol=1e-13, err_msg=op)


def test_own_exp_and_log_within_one_ulp():
    rng = np.random.default_rng(0)
    x = np.concatenate([np.exp(rng.uniform(-745, 709, 20000)), rng.uniform(0.5, 2, 20000),
                        [5e-324, 2.2250738585072014e-308, 1.0, 2.0, np.sqrt(2)]])
    got = np.array([nk.flog(v) for v in x[:2000]] + [nk.flog(v) for v in x[-5:]])
    want = np.log(np.concatenate([x[:2000], x[-5:]]))
    assert np.all(np.abs(got - want) <= np.spacing(np.abs(want)))
    assert nk.flog(0.0) == -np.inf and np.isnan(nk.flog(-1.0)) and nk.flog(np.inf) == np.inf
    assert np.isnan(nk.flog(np.nan))
    e = rng.uniform(-707, 709, 3000)
    got = np.array([nk.fexp(v) for v in e])
    assert np.all(np.abs(got - np.exp(e)) <= np.spacing(np.exp(e)))
    assert nk.fexp(-800.0) == 0.0 and nk.fexp(800.0) == np.inf and nk.fexp(0.0) == 1.0
    assert np.isnan(nk.fexp(np.nan)) and nk.fexp(-np.inf) == 0.0


@pytest.mark.parametrize("op", OPS)
def test_every_layout_equals_c_contiguous(backend, dtype, layout, op):
    name, make = layout
    p, q = inputs((6, 33), dtype, seed=5)
    want = call(op, p, q)
    for axis in (-1, 0):
        np.testing.assert_array_equal(call(op, make(p), make(q), axis=axis), call(op, p, q, axis=axis))
    np.testing.assert_array_equal(call(op, make(p), q), want)


def test_broadcasting_and_mixed_dtypes(backend):
    p, q = inputs((5, 30), np.float64, seed=6, zeros=False)
    np.testing.assert_array_equal(fn.kl_div(p, q[0]), fn.kl_div(p, np.broadcast_to(q[0], p.shape).copy()))
    r = fn.kl_div(p.astype(np.float32), q)
    assert r.dtype == np.float64
    np.testing.assert_array_equal(r, fn.kl_div(p.astype(np.float32).astype(np.float64), q))


def test_inputs_left_unmodified(backend):
    p, q = inputs((5, 30), np.float32, seed=7)
    p0, q0 = p.copy(), q.copy()
    for op in OPS:
        call(op, p, q)
    np.testing.assert_array_equal(p, p0)
    np.testing.assert_array_equal(q, q0)


def test_empty_inputs(backend, dtype):
    assert fn.entropy(np.empty(0, dtype)) == st.entropy([]) == 0.0
    r = fn.kl_div(np.empty((0, 5), dtype), np.empty((0, 5), dtype))
    assert r.shape == (0,) and r.dtype == dtype
    r = fn.js_div(np.empty((3, 0), dtype), np.empty((3, 0), dtype))
    np.testing.assert_array_equal(r, np.zeros(3, dtype))
    assert fn.entropy(np.empty((2, 0, 4), dtype), axis=1).shape == (2, 4)


@pytest.mark.parametrize("op", OPS)
def test_bad_inputs(backend, op):
    p, q = inputs((3, 4), np.float64)
    with pytest.raises(TypeError, match="p must be a float32 or float64"):
        call(op, p.astype(np.int64), q)
    with pytest.raises(TypeError, match="p must be a float32 or float64"):
        call(op, p.astype(np.float16), q)
    if op != "entropy":
        with pytest.raises(TypeError, match="q must be a float32 or float64"):
            call(op, p, q.astype(np.complex128))
        with pytest.raises(ValueError, match=r"\(3, 4\) and \(3, 5\)"):
            call(op, p, np.ones((3, 5)))
    with pytest.raises(ValueError, match="0-d"):
        call(op, np.float64(1.0), np.float64(1.0))
    with pytest.raises(ValueError, match="axis=2 is out of range"):
        call(op, p, q, axis=2)
    for base in (0.0, 1.0, -2.0):
        with pytest.raises(ValueError, match="base"):
            call(op, p, q, base=base)


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_bitwise_same_for_threads_and_backends(dt):
    p, q = inputs(HUGE, dt, seed=8)
    p[3, 5] = 1e-40 if dt == np.float32 else 1e-310
    results = {}
    for be in _dispatch.BACKENDS:
        fastnorm.set_backend(be)
        for threads in (1, 2, 3):
            fastnorm.set_num_threads(threads)
            results[be, threads] = [call(op, p, q) for op in OPS]
    first = next(iter(results.values()))
    for key, r in results.items():
        for a, b in zip(first, r):
            assert a.tobytes() == b.tobytes(), key


# ---------------------------------------------------------------- wasserstein_1d


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("sizes", [(1, 1), (5, 9), (200, 137)])
def test_wasserstein_matches_scipy(dtype, weighted, sizes):
    rng = np.random.default_rng(sum(sizes))
    u = rng.standard_normal(sizes[0]).astype(dtype)
    v = (rng.standard_normal(sizes[1]) * 2 + 1).astype(dtype)
    uw = rng.random(sizes[0]).astype(dtype) if weighted else None
    vw = rng.random(sizes[1]).astype(dtype) if weighted else None
    got = fn.wasserstein_1d(u, v, uw, vw)
    assert got.dtype == dtype
    np.testing.assert_allclose(got, st.wasserstein_distance(u, v, uw, vw), rtol=tol(dtype))


def test_wasserstein_ties_zero_weights_and_symmetry():
    u = [0.0, 0.0, 1.0, 3.0, 3.0]
    v = [3.0, 0.0, 2.0]
    uw = [1.0, 0.0, 2.0, 0.5, 0.5]
    assert fn.wasserstein_1d(u, v, uw) == pytest.approx(st.wasserstein_distance(u, v, uw), rel=1e-15)
    assert fn.wasserstein_1d(u, v, uw) == fn.wasserstein_1d(v, u, None, uw)
    assert fn.wasserstein_1d(u, u) == 0.0


def test_wasserstein_bad_inputs():
    with pytest.raises(ValueError, match="empty"):
        fn.wasserstein_1d([], [1.0])
    with pytest.raises(ValueError, match="u_weights must have the shape"):
        fn.wasserstein_1d([1.0, 2.0], [1.0], [1.0])
    with pytest.raises(ValueError, match="non-negative"):
        fn.wasserstein_1d([1.0, 2.0], [1.0], [1.0, -1.0])
    with pytest.raises(ValueError, match="positive sum"):
        fn.wasserstein_1d([1.0, 2.0], [1.0], None, [0.0])
    with pytest.raises(ValueError, match="1-D"):
        fn.wasserstein_1d(np.ones((2, 2)), [1.0])
    with pytest.raises(TypeError, match="v_values"):
        fn.wasserstein_1d([1.0], np.array([1, 2]))
