"""LayerNorm/RMSNorm on CUDA device arrays, in numba's CUDA simulator (or on a real GPU).

Shapes are tiny: the simulator runs every CUDA thread as a Python thread.
"""
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

import reference as ref  # noqa: E402

TOL = {np.float32: 2e-5, np.float64: 1e-12}
OPS = {
    "layer_norm": (fn.layer_norm, fn.layer_norm_backward, True),
    "rms_norm": (fn.rms_norm, fn.rms_norm_backward, False),
}


def host(a):
    return None if a is None else a.copy_to_host()


def make(dtype, shape=(3, 40), seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 3 + 1).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal(shape[-1:]).astype(dtype)
    b = rng.standard_normal(shape[-1:]).astype(dtype)
    return x, dy, w, b


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("affine", [True, False])
def test_forward_backward_match_cpu_and_reference(op, dtype, affine):
    forward, backward, has_bias = OPS[op]
    x, dy, w, b = make(dtype)
    params = ((w, b) if has_bias else (w,)) if affine else ()
    dparams = [cuda.to_device(p) for p in params]
    out = forward(cuda.to_device(x), *dparams, return_stats=True)
    assert _dispatch.on_device(out[0]) and out[0].dtype == dtype
    cpu = forward(x, *params, return_stats=True)
    for got, want in zip(out, cpu):
        np.testing.assert_allclose(host(got), want, rtol=TOL[dtype], atol=TOL[dtype])
    want_y = getattr(ref, op)(x, *params)
    np.testing.assert_allclose(host(out[0]), want_y, rtol=TOL[dtype], atol=TOL[dtype])

    grads = backward(cuda.to_device(dy), cuda.to_device(x), *dparams)
    want = getattr(ref, op + "_backward")(dy, x, *params)
    for got, w_ in zip(grads, want):
        if w_ is None:
            assert got is None
        else:
            assert _dispatch.on_device(got) and got.dtype == dtype
            np.testing.assert_allclose(host(got), w_, rtol=10 * TOL[dtype], atol=10 * TOL[dtype])
    # statistics handed back give the same result as recomputing them
    stats = out[1:] if has_bias else out[1]
    again = backward(cuda.to_device(dy), cuda.to_device(x), *dparams, stats=stats)
    for got, g2 in zip(again, grads):
        if got is not None:
            np.testing.assert_array_equal(host(got), host(g2))


def test_host_params_axis_and_in_place():
    x, dy, w, b = make(np.float64, shape=(2, 3, 8), seed=1)
    w2 = np.ones((3, 8)) * 0.5
    got = fn.layer_norm(cuda.to_device(x), w2, None, axis=1)  # host weight, 2-D normalized shape
    np.testing.assert_allclose(host(got), ref.layer_norm(x, w2, None, axis=1), atol=1e-12)
    d = cuda.to_device(x)
    assert fn.layer_norm(d, w, b, out=d) is d
    np.testing.assert_allclose(d.copy_to_host(), ref.layer_norm(x, w, b), atol=1e-12)
    ddy = cuda.to_device(dy)
    dx, dw, db = fn.layer_norm_backward(ddy, cuda.to_device(x), w, b, out=ddy)
    want = ref.layer_norm_backward(dy, x, w, b)
    assert dx is ddy
    for got, w_ in zip((dx, dw, db), want):
        np.testing.assert_allclose(host(got), w_, atol=1e-11)


def test_deterministic():
    x, dy, w, b = make(np.float32, seed=2)
    runs = [host(fn.layer_norm_backward(cuda.to_device(dy), cuda.to_device(x), w, b)[1]) for _ in range(2)]
    np.testing.assert_array_equal(*runs)


def test_bad_inputs():
    x, dy, w, b = make(np.float32)
    d = cuda.to_device(x)
    with pytest.raises(TypeError, match="weight"):
        fn.layer_norm(d, cuda.to_device(w.astype(np.float64)))
    with pytest.raises(ValueError, match="weight"):
        fn.layer_norm(d, cuda.to_device(w[:5]))
    with pytest.raises(TypeError, match="x"):
        fn.layer_norm(cuda.to_device(x.astype(np.int32)))
    with pytest.raises(ValueError, match="out"):
        fn.layer_norm(d, out=cuda.device_array((3, 41), np.float32))
    with pytest.raises(TypeError, match="out"):
        fn.layer_norm(d, out=np.empty_like(x))
    with pytest.raises(ValueError, match="dy"):
        fn.layer_norm_backward(cuda.to_device(dy[:2]), d)


def test_empty():
    y, mean, rstd = fn.layer_norm(cuda.to_device(np.zeros((0, 4), np.float32)), return_stats=True)
    assert y.shape == (0, 4) and mean.shape == (0,)
    y, mean, rstd = fn.layer_norm(cuda.to_device(np.zeros((2, 0), np.float32)), return_stats=True)
    assert y.shape == (2, 0) and np.isnan(host(mean)).all()
