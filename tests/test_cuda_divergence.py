"""Divergences on CUDA device arrays, in numba's CUDA simulator (or on a real GPU).

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

from test_divergence import OPS, call, inputs, scipy_op  # noqa: E402

TOL = {np.float32: 2e-6, np.float64: 1e-13}


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_device_matches_scipy_and_cpu(op, dt):
    p, q = inputs((3, 45), dt, seed=11)
    q[0, :] = 0.0
    q[0, 2] = 1.0  # row 0: q = 0 < p somewhere -> inf for kl/cross
    p[1, 4] = np.nan
    dp, dq = cuda.to_device(p), cuda.to_device(q)
    assert _dispatch.on_device(dp)
    for base in (None, 2.0):
        got = call(op, dp, dq, base=base)
        assert _dispatch.on_device(got)
        got = got.copy_to_host()
        assert got.dtype == dt and got.shape == (3,)
        want = scipy_op(op, p, q, base=base)
        np.testing.assert_allclose(got, want, rtol=TOL[dt], atol=TOL[dt])
        np.testing.assert_allclose(got, call(op, p, q, base=base), rtol=TOL[dt], atol=TOL[dt])


def test_device_host_q_zero_and_negative_entries():
    p = np.array([[0.5, 0.5, 0.0], [1.0, -1.0, 2.0]])
    q = np.array([[0.5, 0.0, 0.5], [1.0, 1.0, 1.0]])
    dp = cuda.to_device(p)
    for op in OPS:
        got = call(op, dp, q).copy_to_host()  # host q is copied over
        np.testing.assert_array_equal(np.isinf(got), np.isinf(call(op, p, q)), err_msg=op)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(call(op, p, q)), err_msg=op)
    assert fn.entropy(dp).copy_to_host()[1] == -np.inf


def test_device_errors():
    dp = cuda.to_device(np.ones((2, 3)))
    with pytest.raises(ValueError, match="last one"):
        fn.kl_div(dp, dp, axis=0)
    with pytest.raises(ValueError, match=r"\(2, 3\) and \(2, 4\)"):
        fn.kl_div(dp, cuda.to_device(np.ones((2, 4))))
    with pytest.raises(TypeError, match="q must have dtype"):
        fn.kl_div(dp, cuda.to_device(np.ones((2, 3), np.float32)))
    with pytest.raises(ValueError, match="base"):
        fn.entropy(dp, base=1.0)
    assert fn.entropy(cuda.to_device(np.ones((2, 0)))).copy_to_host().tolist() == [0.0, 0.0]


# ---------------------------------------------------------------- softmax and softmax cross-entropy


# the simulator evaluates -inf - (-inf) on NumPy scalars, which warn (a GPU gives the same NaN)
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("log", [False, True])
def test_softmax_on_device_matches_cpu(dt, log):
    x = (np.random.default_rng(3).standard_normal((4, 70)) * 20).astype(dt)
    x[1, 5] = 3000.0            # the row maximum is subtracted: finite
    x[2, :] = -np.inf           # no finite value: NaN, as on the CPU
    x[3, 7] = np.nan
    f = fn.log_softmax if log else fn.softmax
    d = f(cuda.to_device(x))
    assert _dispatch.on_device(d) and d.dtype == dt and tuple(d.shape) == x.shape
    # exp/log: CUDA's libdevice in float64 vs the CPU's own (a float32 exp for float32): ulps apart
    np.testing.assert_allclose(d.copy_to_host(), f(x), rtol=TOL[dt], atol=TOL[dt], equal_nan=True)
    out = cuda.device_array(x.shape, dt)
    assert f(cuda.to_device(x), out=out) is out
    with pytest.raises(NotImplementedError, match=r"^fastnorm\.functional\.(log_)?softmax: .*last axis"):
        f(cuda.to_device(x), axis=0)


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("smoothing,weighted", [(0.0, False), (0.2, True)])
def test_softmax_cross_entropy_on_device_matches_cpu(dt, reduction, smoothing, weighted):
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((5, 37)) * 4).astype(dt)
    labels = np.array([0, 36, -100, 5, 5])
    kw = dict(reduction=reduction, label_smoothing=smoothing,
              weight=rng.random(37).astype(dt) if weighted else None)
    loss = fn.softmax_cross_entropy(cuda.to_device(x), cuda.to_device(labels), **kw)
    want = fn.softmax_cross_entropy(x, labels, **kw)
    assert _dispatch.on_device(loss) and loss.dtype == dt and tuple(loss.shape) == np.shape(want)
    np.testing.assert_allclose(loss.copy_to_host(), want, rtol=TOL[dt])
    dloss = rng.random(5).astype(dt) if reduction == "none" else 1.5
    dd = cuda.to_device(dloss) if reduction == "none" else dloss
    dx = fn.softmax_cross_entropy_backward(dd, cuda.to_device(x), labels, **kw)
    np.testing.assert_allclose(dx.copy_to_host(), fn.softmax_cross_entropy_backward(dloss, x, labels, **kw),
                               rtol=TOL[dt], atol=TOL[dt])
    fused_loss, fused_dx = fn.softmax_cross_entropy(cuda.to_device(x), labels, return_grad=True, **kw)
    cl, cdx = fn.softmax_cross_entropy(x, labels, return_grad=True, **kw)
    np.testing.assert_allclose(fused_loss.copy_to_host(), cl, rtol=TOL[dt])
    np.testing.assert_allclose(fused_dx.copy_to_host(), cdx, rtol=TOL[dt], atol=TOL[dt])


def test_softmax_cross_entropy_on_device_edges_and_errors():
    x = np.array([[2000.0, 0.0], [0.0, 0.0]])
    y = np.array([0, 1])
    assert float(fn.softmax_cross_entropy(cuda.to_device(x), y).copy_to_host()) == pytest.approx(0.346574, abs=1e-6)
    one = fn.softmax_cross_entropy(cuda.to_device(x[1]), np.array(1), reduction="none")  # (C,) logits
    assert tuple(one.shape) == () and float(one.copy_to_host()) == pytest.approx(np.log(2))
    every_ignored = fn.softmax_cross_entropy(cuda.to_device(x), np.array([-100, -100]))
    assert np.isnan(every_ignored.copy_to_host())  # as torch
    out = cuda.device_array(x.shape)
    assert fn.softmax_cross_entropy_backward(1.0, cuda.to_device(x), y, out=out) is out
    with pytest.raises(ValueError, match="class indices"):
        fn.softmax_cross_entropy(cuda.to_device(x), np.array([0, 2]))
    with pytest.raises(NotImplementedError, match=r"^fastnorm\.functional\.softmax_cross_entropy: "):
        fn.softmax_cross_entropy(cuda.to_device(np.zeros((2, 3, 4))), np.zeros((2, 4), np.int64))


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_js_distance_on_device_is_the_root_of_js_div(dt):
    p, q = inputs((3, 20), dt, seed=2)
    d = fn.js_distance(cuda.to_device(p), cuda.to_device(q), base=2)
    assert _dispatch.on_device(d) and d.dtype == dt
    np.testing.assert_allclose(d.copy_to_host(), fn.js_distance(p, q, base=2), rtol=TOL[dt])
