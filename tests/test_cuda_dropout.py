"""Dropout on CUDA device arrays, in numba's CUDA simulator (or on a real GPU): the same mask as
the CPU backends, bit for bit. Shapes are tiny: the simulator runs threads as Python threads."""
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
from fastnorm.cuda import dropout as cuda_dropout  # noqa: E402

import reference_dropout as rd  # noqa: E402


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("p", [0.3, 0.5])
def test_mask_and_values_equal_the_cpu(dtype, p):
    x = np.random.default_rng(0).standard_normal((3, 100)).astype(dtype)  # a partial tile
    d = fn.dropout(cuda.to_device(x), p, seed=123)
    assert _dispatch.on_device(d) and d.dtype == dtype and tuple(d.shape) == x.shape
    np.testing.assert_array_equal(d.copy_to_host(), fn.dropout(x, p, seed=123))
    back = fn.dropout_backward(cuda.to_device(x), p, 123).copy_to_host()
    np.testing.assert_array_equal(back, fn.dropout(x, p, seed=123))
    mask = cuda_dropout.dropout_mask(x.shape, p, 123).copy_to_host()
    np.testing.assert_array_equal(mask, fn.dropout_mask(x.shape, p, 123))
    np.testing.assert_array_equal(mask, rd.bits(123, x.size).reshape(x.shape) >= int(p * 2 ** 32))


def test_gaussian_dropout_close_to_the_cpu():
    x = np.random.default_rng(1).standard_normal(70)
    g = fn.gaussian_dropout(cuda.to_device(x), 0.4, seed=5).copy_to_host()
    np.testing.assert_allclose(g, fn.gaussian_dropout(x, 0.4, seed=5), rtol=1e-13, atol=1e-15)
    b = fn.gaussian_dropout_backward(cuda.to_device(x), 0.4, 5).copy_to_host()
    np.testing.assert_array_equal(b, g)


def test_edge_cases_and_errors():
    x = np.ones(10, np.float32)
    d = cuda.to_device(x)
    assert fn.dropout(d, 0.5, training=False) is d
    np.testing.assert_array_equal(fn.dropout(d, 1.0, seed=1).copy_to_host(), np.zeros(10, np.float32))
    assert not cuda_dropout.dropout_mask(10, 1.0, 1).copy_to_host().any()
    out = cuda.device_array(10, np.float32)
    assert fn.dropout(d, 0.5, seed=2, out=out) is out
    np.testing.assert_array_equal(out.copy_to_host(), fn.dropout(x, 0.5, seed=2))
    y, seed = fn.dropout(d, 0.5, return_seed=True)
    np.testing.assert_array_equal(y.copy_to_host(), fn.dropout(x, 0.5, seed=seed))
    with pytest.raises(ValueError, match="p must be in"):
        fn.dropout(d, 1.5, seed=0)
    with pytest.raises(TypeError, match="seed"):
        fn.dropout_backward(d, 0.5, None)
    with pytest.raises(TypeError, match="float32 or float64"):
        fn.dropout(cuda.to_device(np.ones(3, np.int32)), 0.5, seed=0)
    assert fn.dropout(cuda.to_device(np.ones((0, 3), np.float32)), 0.5, seed=0).shape == (0, 3)


# ---------------------------------------------------------------- penalties and clipping


def _lists(dtype):
    rng = np.random.default_rng(7)
    return [rng.standard_normal(300).astype(dtype), rng.standard_normal((3, 7)).astype(dtype),
            np.zeros(0, dtype)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_penalties_and_norms_on_device_match_the_cpu(dtype):
    a = _lists(dtype)
    d = [cuda.to_device(x) for x in a]
    for got, want in [(fn.l1_penalty(d), fn.l1_penalty(a)), (fn.l2_penalty(d), fn.l2_penalty(a))] + [
            (fn.grad_norm(d, t), fn.grad_norm(a, t)) for t in (1, 2, 3.5, "inf")]:
        assert _dispatch.on_device(got) and got.dtype == np.float64 and tuple(got.shape) == ()
        # float64 sums in another order than the CPU's lanes: equal within rounding
        np.testing.assert_allclose(got.copy_to_host(), want, rtol=1e-14)
    assert float(fn.l2_penalty([cuda.to_device(np.zeros(0, dtype))]).copy_to_host()) == 0.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("norm_type", [2, 1, "inf", 3.0])
def test_clip_grad_norm_on_device_scales_like_the_cpu(dtype, norm_type):
    a = _lists(dtype)
    d = [cuda.to_device(x) for x in a]
    total = fn.clip_grad_norm_(d, 0.5, norm_type)
    want = fn.clip_grad_norm_(a, 0.5, norm_type)
    np.testing.assert_allclose(total.copy_to_host(), want, rtol=1e-14)
    for g, c in zip(d, a):
        # the factor is rounded to the dtype and multiplies in it, as on the CPU; the totals
        # may differ in the last bit, and so the factors: a few ulps
        np.testing.assert_allclose(g.copy_to_host(), c, rtol=4 * np.finfo(dtype).eps)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the simulator's NaN
def test_clip_grad_norm_on_device_nonfinite_and_errors():
    g = [cuda.to_device(np.array([1.0, np.nan, 2.0]))]
    assert np.isnan(fn.clip_grad_norm_(g, 1.0).copy_to_host())
    assert np.isnan(g[0].copy_to_host()).all()  # as torch: a NaN total turns every gradient to NaN
    with pytest.raises(RuntimeError, match="non-finite"):
        fn.clip_grad_norm_([cuda.to_device(np.array([np.inf]))], 1.0, error_if_nonfinite=True)
    inf = [cuda.to_device(np.array([np.inf, 1.0]))]
    assert fn.clip_grad_norm_(inf, 1.0, "inf").copy_to_host() == np.inf
    with pytest.raises(TypeError, match="device arrays only"):
        fn.l1_penalty([cuda.to_device(np.ones(2)), np.ones(2)])
    with pytest.raises(ValueError, match="norm_type"):
        fn.grad_norm([cuda.to_device(np.ones(2))], -1.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_penalty_grads_and_prox_on_device_equal_the_cpu(dtype):
    a = _lists(dtype)
    a[0][:3] = [0.0, -0.0, np.nan]
    g = [np.ones_like(x) for x in a]
    dg = [cuda.to_device(x) for x in g]
    dp = [cuda.to_device(x) for x in a]
    fn.l1_penalty_grad_(dp, dg, 0.3)
    fn.l1_penalty_grad_(a, g, 0.3)
    fn.l2_penalty_grad_(dp, dg, 0.7)
    fn.l2_penalty_grad_(a, g, 0.7)
    for x, y in zip(dg, g):
        # the same elementwise operations in the dtype: bitwise in the simulator; a GPU may
        # contract l2's multiply-add into an FMA (one rounding fewer)
        np.testing.assert_allclose(x.copy_to_host(), y, rtol=0 if config.ENABLE_CUDASIM else np.finfo(dtype).eps)
    assert fn.l1_prox_(dp, 0.25) is dp
    fn.l1_prox_(a, 0.25)
    for x, y in zip(dp, a):
        h = x.copy_to_host()
        np.testing.assert_array_equal(h, y)
        np.testing.assert_array_equal(np.signbit(h), np.signbit(y))


# ---------------------------------------------------------------- init and random fills


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_init_and_random_fill_device_arrays_with_the_cpu_streams(dtype):
    from fastnorm import init, random as fr

    for op, args in [(init.uniform_, (-1.0, 3.0)), (init.normal_, (0.5, 2.0)),
                     (init.kaiming_uniform_, ()), (init.xavier_normal_, ())]:
        d = cuda.device_array((6, 5), dtype)
        assert op(d, *args, seed=9) is d
        # uniform: bitwise (Philox words); normal: Box-Muller through libdevice, ulps on a GPU
        np.testing.assert_allclose(d.copy_to_host(), op(np.empty((6, 5), dtype), *args, seed=9),
                                   rtol=1e-13 if dtype == np.float64 else 1e-6)
    d = cuda.device_array(300, dtype)
    fr.uniform(300, -2.0, 2.0, seed=1, offset=77, dtype=dtype, out=d)
    np.testing.assert_array_equal(d.copy_to_host(), fr.uniform(300, -2.0, 2.0, seed=1, offset=77, dtype=dtype))
    with pytest.raises(TypeError, match="dtype"):
        fr.normal(3, seed=1, dtype=np.float64, out=cuda.device_array(3, np.float32))
