"""fastnorm.ops.local: LRN, Lp, weight and cosine normalization against the float64 reference and
torch autograd, on both CPU backends; determinism, layouts, out=, NaN, empty and bad inputs."""
import re

import numpy as np
import pytest

import fastnorm
import fastnorm.functional as fn
from fastnorm import _dispatch

import reference_local as ref
from conftest import LAYOUTS

TOL = {np.dtype(np.float32): 2e-6, np.dtype(np.float64): 1e-12}


def close(actual, desired, dtype, scale=None):
    t = TOL[np.dtype(dtype)] * (1 if scale is None else scale)
    assert actual.shape == desired.shape
    finite = np.abs(desired[np.isfinite(desired)])
    big = max(1.0, finite.max()) if finite.size else 1.0
    np.testing.assert_allclose(actual, desired, rtol=t, atol=t * big, equal_nan=True)


def bits(a):
    return np.ascontiguousarray(a).view(np.uint8)


def all_backends_threads(call):
    """call() under both backends and 1/2/3 threads: every result has the same bits."""
    results = []
    for backend in _dispatch.BACKENDS:
        fastnorm.set_backend(backend)
        for threads in (1, 2, 3):
            fastnorm.set_num_threads(threads)
            r = call()
            results.append(r if isinstance(r, tuple) else (r,))
    for r in results[1:]:
        for a, b in zip(r, results[0]):
            assert np.array_equal(bits(a), bits(b))


# ---------------------------------------------------------------- LRN

SIZES = (1, 2, 3, 4, 5, 8, 11)
BETAS = (0.75, 0.5, 1.0, 0.6)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("beta", BETAS)
def test_lrn_matches_reference_and_torch(backend, dtype, size, beta):
    rng = np.random.default_rng(size)
    x = (2 * rng.standard_normal((2, 7, 3, 5))).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    kw = dict(alpha=0.3, beta=beta, k=1.5)
    y = fn.local_response_norm(x, size, **kw)
    assert y.dtype == dtype and y.shape == x.shape
    close(y, ref.local_response_norm(x, size, **kw), dtype)
    close(y, ref.torch_local_response_norm(x, size, **kw), dtype, scale=4)
    dx = fn.local_response_norm_backward(dy, x, size, **kw)
    assert dx.dtype == dtype
    close(dx, ref.local_response_norm_backward(dy, x, size, **kw), dtype)
    close(dx, ref.torch_local_response_norm(x, size, dy=dy, **kw), dtype, scale=4)


@pytest.mark.parametrize("shape", [(2, 5, 7), (1, 3, 2, 2, 3), (3, 1, 4), (2, 6, 1)])
def test_lrn_any_rank_and_defaults(backend, shape):
    x = np.random.default_rng(0).standard_normal(shape) * 30
    close(fn.local_response_norm(x, 3), ref.torch_local_response_norm(x, 3), np.float64)
    close(fn.local_response_norm(x, 2, k=2.0), ref.local_response_norm(x, 2, k=2.0), np.float64)


def test_reference_matches_torch():
    rng = np.random.default_rng(4)
    x, dy = rng.standard_normal((2, 2, 9, 4))
    for size in (2, 5):
        np.testing.assert_allclose(ref.local_response_norm(x, size, alpha=0.5),
                                   ref.torch_local_response_norm(x, size, alpha=0.5), rtol=1e-12)
        np.testing.assert_allclose(ref.local_response_norm_backward(dy, x, size, alpha=0.5),
                                   ref.torch_local_response_norm(x, size, alpha=0.5, dy=dy), rtol=1e-10)


@pytest.mark.parametrize("size", [2, 5])
def test_lrn_bitwise_across_backends_and_threads(size, dtype):
    # (2, 16, 130, 130): above both backends' parallel thresholds; tiles not a multiple of 512
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 16, 130, 130)).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    assert x.size > _dispatch.NUMBA_PARALLEL_MIN_WORK
    all_backends_threads(lambda: fn.local_response_norm(x, size, alpha=0.1))
    all_backends_threads(lambda: fn.local_response_norm(x, size, alpha=0.1, beta=0.6))
    all_backends_threads(lambda: fn.local_response_norm_backward(dy, x, size, alpha=0.1))


def test_lrn_nan_and_inf_stay_in_their_windows(backend):
    x = np.random.default_rng(6).standard_normal((1, 12, 3))
    x[0, 2, 0] = np.nan
    x[0, 8, 1] = np.inf
    y = fn.local_response_norm(x, 3, alpha=1.0)
    want = ref.torch_local_response_norm(x, 3, alpha=1.0)
    np.testing.assert_allclose(y, want, rtol=1e-12, equal_nan=True)
    assert np.isnan(y[0, 1:4, 0]).all() and np.isfinite(y[0, 5:, 0]).all()
    assert np.isfinite(y[0, :, 2]).all()  # a column without them is untouched


def test_lrn_layouts_and_out(backend, layout):
    name, make = layout
    x = np.random.default_rng(7).standard_normal((2, 6, 3, 4)).astype(np.float32)
    want = fn.local_response_norm(x, 4, alpha=0.2)
    xl = make(x)
    got = fn.local_response_norm(xl, 4, alpha=0.2)
    assert np.array_equal(got, want) and got.dtype == np.float32
    dy = make(np.ones_like(x))
    assert np.array_equal(fn.local_response_norm_backward(dy, xl, 4, alpha=0.2),
                          fn.local_response_norm_backward(np.ones_like(x), x, 4, alpha=0.2))


def test_lrn_out_in_place_and_strided(backend):
    x = np.random.default_rng(8).standard_normal((2, 9, 5))
    want = fn.local_response_norm(x, 5, alpha=0.5)
    inplace = x.copy()
    assert fn.local_response_norm(inplace, 5, alpha=0.5, out=inplace) is inplace
    assert np.array_equal(inplace, want)
    big = np.zeros((2, 9, 10))
    out = big[:, :, ::2]
    assert fn.local_response_norm(x, 5, alpha=0.5, out=out) is out
    assert np.array_equal(out, want) and not big[:, :, 1::2].any()
    dy = np.ones_like(x)
    want_dx = fn.local_response_norm_backward(dy, x, 5, alpha=0.5)
    assert np.array_equal(fn.local_response_norm_backward(dy, x, 5, alpha=0.5, out=dy), want_dx)


def test_lrn_bad_inputs(backend):
    x = np.ones((2, 3, 4), np.float32)
    with pytest.raises(TypeError, match="x must be a float32 or float64"):
        fn.local_response_norm(np.ones((2, 3, 4), np.int32), 3)
    with pytest.raises(ValueError, match="at least 3 dimensions"):
        fn.local_response_norm(np.ones((2, 3)), 3)
    for size, err in ((0, ValueError), (True, TypeError), (2.0, TypeError)):
        with pytest.raises(err, match="size"):
            fn.local_response_norm(x, size)
    with pytest.raises(TypeError, match="beta"):
        fn.local_response_norm(x, 3, beta="a")
    out = np.full((2, 3, 5), 7.0, np.float32)
    with pytest.raises(ValueError, match="out must have shape"):
        fn.local_response_norm(x, 3, out=out)
    out64 = np.full(x.shape, 7.0)
    with pytest.raises(TypeError, match="out must have dtype"):
        fn.local_response_norm(x, 3, out=out64)
    assert (out == 7).all() and (out64 == 7).all()
    with pytest.raises(ValueError, match="dy and x must have the same shape"):
        fn.local_response_norm_backward(np.ones((2, 3, 5), np.float32), x, 3)
    with pytest.raises(TypeError, match="dy must have the dtype"):
        fn.local_response_norm_backward(np.ones(x.shape), x, 3)


@pytest.mark.parametrize("shape", [(0, 3, 4), (2, 0, 4), (2, 3, 0)])
def test_lrn_empty(backend, shape):
    x = np.empty(shape, np.float32)
    assert fn.local_response_norm(x, 3).shape == shape
    assert fn.local_response_norm_backward(x, x, 3).shape == shape


# ---------------------------------------------------------------- Lp normalization

PS = (2, 1, 3, 1.5, np.inf)


@pytest.mark.parametrize("p", PS)
@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_lp_matches_reference_and_torch(backend, dtype, p, axis):
    rng = np.random.default_rng(9)
    x = rng.standard_normal((4, 6, 37)).astype(dtype)
    x[1, 2] = 0.0  # a zero slice along the last axis: the clamp
    dy = rng.standard_normal(x.shape).astype(dtype)
    y = fn.lp_normalize(x, p=p, axis=axis)
    assert y.dtype == dtype
    close(y, ref.lp_normalize(x, p=p, axis=axis), dtype)
    close(y, ref.torch_lp_normalize(x, p=p, axis=axis), dtype, scale=4)
    dx = fn.lp_normalize_backward(dy, x, p=p, axis=axis)
    close(dx, ref.torch_lp_normalize(x, p=p, axis=axis, dy=dy), dtype, scale=20)


def test_lp_eps_clamp_and_inf_ties(backend):
    x = np.array([[1e-6, 0.0, -1e-6], [3.0, -3.0, 1.0]])
    dy = np.array([[1.0, 2.0, 3.0], [0.5, 1.0, -2.0]])
    for p in (2, np.inf):
        np.testing.assert_allclose(fn.lp_normalize(x, p=p, eps=1e-3),
                                   ref.torch_lp_normalize(x, p=p, eps=1e-3), rtol=1e-14)
        np.testing.assert_allclose(fn.lp_normalize_backward(dy, x, p=p, eps=1e-3),
                                   ref.torch_lp_normalize(x, p=p, eps=1e-3, dy=dy), rtol=1e-12)


def test_lp_nan_and_empty(backend):
    x = np.random.default_rng(10).standard_normal((3, 5))
    x[1, 2] = np.nan
    for p in (2, 1, np.inf, 3):
        y = fn.lp_normalize(x, p=p)
        assert np.isnan(y[1]).all() and np.isfinite(y[[0, 2]]).all()
        y0 = fn.lp_normalize(x, p=p, axis=0)
        assert np.isnan(y0[:, 2]).all() and np.isfinite(np.delete(y0, 2, axis=1)).all()
    for shape in ((0, 4), (3, 0)):
        e = np.empty(shape)
        assert fn.lp_normalize(e).shape == shape and fn.lp_normalize_backward(e, e).shape == shape


def test_lp_bitwise_across_backends_and_threads(dtype):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((700, 1001)).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    for p in (2, 1, 3):
        for axis in (-1, 0):
            all_backends_threads(lambda: fn.lp_normalize(x, p=p, axis=axis))
            all_backends_threads(lambda: fn.lp_normalize_backward(dy, x, p=p, axis=axis))


def test_lp_layouts_out_and_bad_inputs(backend, layout):
    name, make = layout
    x = np.random.default_rng(12).standard_normal((5, 7)).astype(np.float32)
    for axis in (0, 1):
        want = fn.lp_normalize(x, axis=axis)
        assert np.array_equal(fn.lp_normalize(make(x), axis=axis), want)
        out = make(np.zeros_like(x))
        if out.flags.writeable:
            assert fn.lp_normalize(x, axis=axis, out=out) is out
            assert np.array_equal(out, want)
    xi = x.copy()
    assert fn.lp_normalize(xi, out=xi) is xi and np.array_equal(xi, fn.lp_normalize(x))
    with pytest.raises(ValueError, match="p must be positive"):
        fn.lp_normalize(x, p=0)
    with pytest.raises(ValueError, match="p must not be NaN"):
        fn.lp_normalize(x, p=float("nan"))
    with pytest.raises(ValueError, match="axis=2 is out of range"):
        fn.lp_normalize(x, axis=2)
    with pytest.raises(TypeError, match="x must be a float32 or float64"):
        fn.lp_normalize(np.ones(3, np.int64))
    with pytest.raises(ValueError, match="eps must be a non-negative"):
        fn.lp_normalize(x, eps=-1.0)


# ---------------------------------------------------------------- weight normalization


@pytest.mark.parametrize("axis", [0, 1, 2, -1, None])
def test_weight_norm_matches_reference_and_torch(backend, dtype, axis):
    rng = np.random.default_rng(13)
    v = rng.standard_normal((5, 4, 3)).astype(dtype)
    dw = rng.standard_normal(v.shape).astype(dtype)
    g = (rng.standard_normal(1 if axis is None else v.shape[axis]) + 2).astype(dtype)
    w = fn.weight_norm(v, g, axis=axis)
    assert w.dtype == dtype and w.shape == v.shape
    close(w, ref.weight_norm(v, g, axis=axis), dtype)
    close(w, ref.torch_weight_norm(v, g, axis=axis), dtype, scale=4)
    dv, dg = fn.weight_norm_backward(dw, v, g, axis=axis)
    assert dg.shape == g.shape and dg.dtype == dtype
    rv, rg = ref.weight_norm_backward(dw, v, g, axis=axis)
    tv, tg = ref.torch_weight_norm(v, g, axis=axis, dw=dw)
    close(dv, rv, dtype)
    close(dg, rg, dtype)
    close(dv, tv, dtype, scale=4)
    close(dg, tg, dtype, scale=4)


def test_weight_norm_keepdims_g_and_errors(backend):
    rng = np.random.default_rng(14)
    v = rng.standard_normal((6, 3, 2))
    g = rng.standard_normal((6, 1, 1))
    w = fn.weight_norm(v, g)
    assert np.array_equal(w, fn.weight_norm(v, g.ravel()))
    dv, dg = fn.weight_norm_backward(np.ones_like(v), v, g)
    assert dg.shape == (6, 1, 1)
    with pytest.raises(ValueError, match=re.escape("g must have shape (6,) or (6, 1, 1)")):
        fn.weight_norm(v, np.ones(3))
    with pytest.raises(TypeError, match="g must be a float32 or float64"):
        fn.weight_norm(v, np.ones(6, np.int32))
    with pytest.raises(ValueError, match="one value for axis=None"):
        fn.weight_norm(v, np.ones(2), axis=None)
    with pytest.raises(ValueError, match="dw and v must have the same shape"):
        fn.weight_norm_backward(np.ones((6, 3)), v, g)
    for axis in (0, 1):
        out = np.zeros_like(v)
        assert fn.weight_norm(v, np.ones(v.shape[axis]), axis=axis, out=out) is out
        assert np.array_equal(out, fn.weight_norm(v, np.ones(v.shape[axis]), axis=axis))
    vi = v.copy()
    assert fn.weight_norm(vi, g, out=vi) is vi and np.array_equal(vi, w)
    with pytest.raises(ValueError, match="out must have shape"):
        fn.weight_norm(v, g, out=np.zeros((6, 3)))
    # torch's behaviour on a zero slice: NaN, no eps
    v[2] = 0.0
    with np.errstate(all="ignore"):
        assert np.isnan(fn.weight_norm(v, g)[2]).all()


def test_weight_norm_bitwise_across_backends_and_threads():
    rng = np.random.default_rng(15)
    v = rng.standard_normal((300, 2000)).astype(np.float32)
    g = rng.standard_normal(300).astype(np.float32)
    dw = rng.standard_normal(v.shape).astype(np.float32)
    all_backends_threads(lambda: fn.weight_norm(v, g))
    all_backends_threads(lambda: fn.weight_norm_backward(dw, v, g))
    all_backends_threads(lambda: fn.weight_norm(v.T.copy(), g, axis=1))


@pytest.mark.parametrize("axis", [0, 1, 2, None])
def test_weight_norm_backward_out(backend, dtype, axis):
    """out receives dv, bit for bit the returned dv, also when it is dw or v (in place) or a
    strided view; a wrong out raises before anything is written."""
    rng = np.random.default_rng(16)
    v = rng.standard_normal((5, 4, 3)).astype(dtype)
    dw = rng.standard_normal(v.shape).astype(dtype)
    g = (rng.standard_normal(1 if axis is None else v.shape[axis]) + 2).astype(dtype)
    want_dv, want_dg = fn.weight_norm_backward(dw, v, g, axis=axis)
    out = np.zeros_like(v)
    dv, dg = fn.weight_norm_backward(dw, v, g, axis=axis, out=out)
    assert dv is out and np.array_equal(out, want_dv) and np.array_equal(dg, want_dg)
    dwi = dw.copy()
    assert fn.weight_norm_backward(dwi, v, g, axis=axis, out=dwi)[0] is dwi
    assert np.array_equal(dwi, want_dv)
    vi = v.copy()
    assert fn.weight_norm_backward(dw, vi, g, axis=axis, out=vi)[0] is vi
    assert np.array_equal(vi, want_dv)
    big = np.zeros((5, 4, 6), dtype)
    strided = big[:, :, ::2]
    assert fn.weight_norm_backward(dw, v, g, axis=axis, out=strided)[0] is strided
    assert np.array_equal(strided, want_dv) and not big[:, :, 1::2].any()
    bad = np.full((5, 4), 7, dtype)
    with pytest.raises(ValueError, match="out must have shape"):
        fn.weight_norm_backward(dw, v, g, axis=axis, out=bad)
    assert (bad == 7).all()


# ---------------------------------------------------------------- cosine normalization


def test_cosine_linear_matches_reference_and_torch(backend, dtype):
    rng = np.random.default_rng(16)
    x = rng.standard_normal((3, 4, 9)).astype(dtype)
    w = rng.standard_normal((5, 9)).astype(dtype)
    x[0, 1] = 0.0  # zero rows: clamped by eps, no NaN
    w[3] = 0.0
    dy = rng.standard_normal((3, 4, 5)).astype(dtype)
    y = fn.cosine_linear(x, w)
    assert y.shape == (3, 4, 5) and y.dtype == dtype
    close(y, ref.cosine_linear(x, w), dtype, scale=4)
    close(y, ref.torch_cosine_linear(x, w), dtype, scale=4)
    dx, dw = fn.cosine_linear_backward(dy, x, w)
    tx, tw = ref.torch_cosine_linear(x, w, dy=dy)
    close(dx, tx, dtype, scale=8)
    close(dw, tw, dtype, scale=8)
    # our float64 reference (with the forward's y) on nonzero rows: (no zero rows here)
    x[0, 1] = 1.0
    w[3] = 1.0
    dx, dw = fn.cosine_linear_backward(dy, x, w)
    rx, rw = ref.cosine_linear_backward(dy, x, w)
    close(dx, rx, dtype, scale=8)
    close(dw, rw, dtype, scale=8)


def test_cosine_linear_bad_inputs_and_empty(backend):
    x = np.ones((2, 3))
    with pytest.raises(ValueError, match=re.escape("w must have shape (out_features, 3)")):
        fn.cosine_linear(x, np.ones((4, 2)))
    with pytest.raises(TypeError, match="w must have the dtype"):
        fn.cosine_linear(x, np.ones((4, 3), np.float32))
    with pytest.raises(TypeError, match="x must be a float32"):
        fn.cosine_linear(np.ones((2, 3), int), np.ones((4, 3)))
    with pytest.raises(ValueError, match="dy must have shape"):
        fn.cosine_linear_backward(np.ones((2, 3)), x, np.ones((4, 3)))
    assert fn.cosine_linear(np.empty((0, 3)), np.ones((4, 3))).shape == (0, 4)
    dx, dw = fn.cosine_linear_backward(np.empty((0, 4)), np.empty((0, 3)), np.ones((4, 3)))
    assert dx.shape == (0, 3) and (dw == 0).all()


def test_inputs_are_not_modified(backend):
    rng = np.random.default_rng(17)
    x = rng.standard_normal((2, 5, 3))
    keep = x.copy()
    fn.local_response_norm(x, 3)
    fn.local_response_norm_backward(x, x, 3)
    fn.lp_normalize(x, axis=1)
    fn.lp_normalize_backward(x, x, axis=1)
    fn.weight_norm(x, np.ones(2))
    fn.weight_norm_backward(x, x, np.ones(2))
    fn.cosine_linear(x, x[0])
    assert np.array_equal(x, keep)


# ---------------------------------------------------------------- laws

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), p=st.sampled_from([1.0, 2.0, 3.0, 0.5, np.inf]),
       rows=st.integers(1, 6), cols=st.integers(1, 40))
def test_lp_normalized_rows_have_unit_norm(seed, p, rows, cols):
    x = np.random.default_rng(seed).standard_normal((rows, cols)) + 0.1
    y = fn.lp_normalize(x, p=p)
    np.testing.assert_allclose(ref.lp_norm(y, p, -1), 1.0, rtol=1e-12)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), axis=st.sampled_from([0, 1, 2, None]))
def test_weight_norm_slices_have_norm_abs_g(seed, axis):
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((3, 4, 5))
    g = rng.standard_normal(1 if axis is None else v.shape[axis])
    w = fn.weight_norm(v, g, axis=axis)
    if axis is None:
        np.testing.assert_allclose(np.sqrt((w * w).sum()), abs(g[0]), rtol=1e-12)
    else:
        red = tuple(i for i in range(3) if i != axis)
        np.testing.assert_allclose(np.sqrt((w * w).sum(axis=red)), np.abs(g), rtol=1e-12)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), size=st.integers(1, 12), c=st.integers(1, 9))
def test_lrn_window_of_any_size_matches_direct_sums(seed, size, c):
    x = np.random.default_rng(seed).standard_normal((2, c, 3)) * 10
    np.testing.assert_allclose(fn.local_response_norm(x, size, alpha=1.0),
                               ref.local_response_norm(x, size, alpha=1.0), rtol=1e-13)
