"""LRN, lp_normalize, weight_norm and cosine_linear on CUDA device arrays, in numba's CUDA simulator (or on a real GPU). Tiny shapes: the
simulator runs every CUDA thread as a Python thread."""
import os

os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

cuda = pytest.importorskip("numba.cuda")
from numba import config  # noqa: E402

if not config.ENABLE_CUDASIM and not cuda.is_available():
    pytest.skip("numba.cuda was imported without the simulator and there is no GPU", allow_module_level=True)

import fastnorm.functional as fn  # noqa: E402
from fastnorm import _dispatch  # noqa: E402

import reference_local as ref  # noqa: E402

TOL = {np.float32: 3e-6, np.float64: 1e-12}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size,beta", [(3, 0.75), (2, 0.6), (4, 1.0), (9, 0.5)])
def test_lrn_on_device_matches_reference(dtype, size, beta):
    rng = np.random.default_rng(size)
    x = (2 * rng.standard_normal((2, 5, 3))).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    kw = dict(alpha=0.4, beta=beta, k=1.5)
    y = fn.local_response_norm(cuda.to_device(x), size, **kw)
    assert _dispatch.on_device(y) and y.dtype == dtype
    np.testing.assert_allclose(y.copy_to_host(), ref.local_response_norm(x, size, **kw),
                               rtol=TOL[dtype], atol=TOL[dtype])
    dx = fn.local_response_norm_backward(cuda.to_device(dy), cuda.to_device(x), size, **kw)
    np.testing.assert_allclose(dx.copy_to_host(), ref.local_response_norm_backward(dy, x, size, **kw),
                               rtol=TOL[dtype], atol=TOL[dtype])


def test_lrn_on_device_in_place_nan_and_errors():
    x = np.random.default_rng(1).standard_normal((1, 6, 2))
    x[0, 1, 0] = np.nan
    want = ref.local_response_norm(x, 3)
    d = cuda.to_device(x)
    assert fn.local_response_norm(d, 3, out=d) is d
    np.testing.assert_allclose(d.copy_to_host(), want, rtol=1e-12, equal_nan=True)
    with pytest.raises(ValueError, match="at least 3 dimensions"):
        fn.local_response_norm(cuda.to_device(np.ones((2, 3))), 3)
    with pytest.raises(ValueError, match="size must be at least 1"):
        fn.local_response_norm(cuda.to_device(np.ones((2, 3, 1))), 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("p", [2, 1, np.inf, 3])
@pytest.mark.parametrize("axis", [-1, 0])
def test_lp_normalize_on_device_matches_cpu(dtype, p, axis):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 5)).astype(dtype)
    x[1] = 0.0
    dy = rng.standard_normal(x.shape).astype(dtype)
    y = fn.lp_normalize(cuda.to_device(x), p=p, axis=axis)
    assert _dispatch.on_device(y)
    np.testing.assert_allclose(y.copy_to_host(), fn.lp_normalize(x, p=p, axis=axis),
                               rtol=TOL[dtype], atol=TOL[dtype])
    dx = fn.lp_normalize_backward(cuda.to_device(dy), cuda.to_device(x), p=p, axis=axis)
    np.testing.assert_allclose(dx.copy_to_host(), fn.lp_normalize_backward(dy, x, p=p, axis=axis),
                               rtol=10 * TOL[dtype], atol=10 * TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("axis", [0, 1, 2, None])
def test_weight_norm_on_device_matches_cpu(dtype, axis):
    rng = np.random.default_rng(3)
    v = rng.standard_normal((3, 4, 2)).astype(dtype)
    g = (rng.random(1 if axis is None else v.shape[axis]) + 0.5).astype(dtype)
    dw = rng.standard_normal(v.shape).astype(dtype)
    w = fn.weight_norm(cuda.to_device(v), g, axis=axis)
    np.testing.assert_allclose(w.copy_to_host(), fn.weight_norm(v, g, axis=axis),
                               rtol=TOL[dtype], atol=TOL[dtype])
    dv, dg = fn.weight_norm_backward(cuda.to_device(dw), cuda.to_device(v), g, axis=axis)
    want_dv, want_dg = fn.weight_norm_backward(dw, v, g, axis=axis)
    np.testing.assert_allclose(dv.copy_to_host(), want_dv, rtol=10 * TOL[dtype], atol=10 * TOL[dtype])
    np.testing.assert_allclose(dg.copy_to_host(), want_dg, rtol=10 * TOL[dtype], atol=10 * TOL[dtype])
    out = cuda.device_array(v.shape, dtype)
    dv2, _ = fn.weight_norm_backward(cuda.to_device(dw), cuda.to_device(v), g, axis=axis, out=out)
    assert dv2 is out
    np.testing.assert_array_equal(out.copy_to_host(), dv.copy_to_host())
    with pytest.raises(ValueError, match="g must"):
        fn.weight_norm(cuda.to_device(v), np.ones(7), axis=axis)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cosine_linear_on_device_matches_cpu_and_float64(dtype):
    # several tiles in every direction (TILE is 8 in the simulator), a zero row in x and in w
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 6, 19)).astype(dtype)
    w = rng.standard_normal((10, 19)).astype(dtype)
    x[1, 2] = 0
    w[3] = 0
    y = fn.cosine_linear(cuda.to_device(x), cuda.to_device(w))
    assert _dispatch.on_device(y) and y.dtype == dtype and tuple(y.shape) == (2, 6, 10)
    got = y.copy_to_host()
    # float64 sums on the device: within one rounding of the float64 reference
    np.testing.assert_allclose(got, ref.cosine_linear(x, w), rtol=TOL[dtype] / 10, atol=1e-7 if dtype == np.float32 else 1e-15)
    np.testing.assert_allclose(got, fn.cosine_linear(x, w), rtol=TOL[dtype], atol=TOL[dtype])
    dy = rng.standard_normal((2, 6, 10)).astype(dtype)
    dx, dw = fn.cosine_linear_backward(cuda.to_device(dy), cuda.to_device(x), w)  # a host w is copied over
    cx, cw = fn.cosine_linear_backward(dy, x, w)
    assert dx.dtype == dtype and tuple(dx.shape) == x.shape and tuple(dw.shape) == w.shape
    # both compute in float64 and round once: float32 results are equal (or one ulp apart)
    scale = np.abs(cw).max()
    np.testing.assert_allclose(dx.copy_to_host(), cx, rtol=1e-6 if dtype == np.float32 else 1e-12, atol=1e-12)
    np.testing.assert_allclose(dw.copy_to_host(), cw, rtol=1e-6 if dtype == np.float32 else 1e-12, atol=1e-15 * scale)


def test_cosine_linear_on_device_eps_empty_and_errors():
    x = np.array([[3.0, 4.0], [0.0, 0.0]])
    w = np.array([[1.0, 0.0], [0.0, 2.0]])
    y = fn.cosine_linear(cuda.to_device(x), cuda.to_device(w), eps=1e-3)
    np.testing.assert_allclose(y.copy_to_host(), [[0.6, 0.8], [0.0, 0.0]], rtol=1e-15)
    empty = fn.cosine_linear(cuda.to_device(np.empty((0, 2))), cuda.to_device(w))
    assert tuple(empty.shape) == (0, 2)
    dx, dw = fn.cosine_linear_backward(cuda.to_device(np.empty((0, 2))), cuda.to_device(np.empty((0, 2))), w)
    assert tuple(dx.shape) == (0, 2) and np.array_equal(dw.copy_to_host(), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="out_features"):
        fn.cosine_linear(cuda.to_device(x), cuda.to_device(np.ones((2, 3))))
    with pytest.raises(TypeError, match="dtype"):
        fn.cosine_linear(cuda.to_device(x), cuda.to_device(w.astype(np.float32)))
