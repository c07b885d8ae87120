"""BatchNorm/InstanceNorm/GroupNorm/moments on CUDA device arrays, in numba's CUDA simulator (or
on a real GPU). Shapes are tiny: the simulator runs every CUDA thread as a Python thread."""
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

import reference_batch as ref  # noqa: E402

TOL = {np.float32: 3e-5, np.float64: 1e-11}


def host(a):
    return None if a is None else a.copy_to_host()


def dev(a):
    return None if a is None else cuda.to_device(a)


def close(got, want, dtype, scale=1.0):
    if want is None:
        assert got is None
        return
    assert _dispatch.on_device(got)
    t = TOL[dtype] * scale
    np.testing.assert_allclose(host(got), want, rtol=t, atol=t * max(1.0, np.abs(want).max()))


def make(shape, dtype, seed=0, axis=1):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 2 + 1).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    C = shape[axis]
    return x, dy, (1 + 0.3 * rng.standard_normal(C)).astype(dtype), (0.2 * rng.standard_normal(C)).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("axis", [1, -1])
def test_batch_norm_on_device(dtype, mode, axis):
    x, dy, w, b = make((2, 3, 4) if axis == 1 else (2, 2, 3), dtype, axis=axis)
    C = x.shape[axis]
    training = mode == "train"
    rm, rv = np.full(C, 0.1, dtype), np.full(C, 1.5, dtype)
    want, want_rm, want_rv = ref.batch_norm(x, rm, rv, w, b, training=training, momentum=0.3, axis=axis)
    drm, drv = dev(rm), dev(rv)  # device running stats are updated on the device
    y, mean, invstd = fn.batch_norm(dev(x), drm, drv, dev(w), b, training=training, momentum=0.3,
                                    axis=axis, return_stats=True)
    close(y, want, dtype)
    assert y.dtype == dtype
    np.testing.assert_allclose(host(drm), want_rm, rtol=TOL[dtype])
    np.testing.assert_allclose(host(drv), want_rv, rtol=TOL[dtype])
    cpu = fn.batch_norm(x, rm.copy(), rv.copy(), w, b, training=training, momentum=0.3, axis=axis,
                        return_stats=True)
    np.testing.assert_allclose(host(mean), cpu[1], rtol=1e-12)
    np.testing.assert_allclose(host(invstd), cpu[2], rtol=1e-12)
    grads = fn.batch_norm_backward(dev(dy), dev(x), dev(rm), dev(rv), dev(w), dev(b),
                                   training=training, axis=axis)
    for g, r in zip(grads, ref.batch_norm_backward(dy, x, rm, rv, w, b, training=training, axis=axis)):
        close(g, r, dtype, 10)
    again = fn.batch_norm_backward(dev(dy), dev(x), rm, rv, w, b, training=training, axis=axis,
                                   stats=(mean, invstd))
    for g, a in zip(grads, again):
        np.testing.assert_array_equal(host(g), host(a))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_instance_and_group_norm_on_device(dtype):
    x, dy, w, b = make((2, 2, 6), dtype, seed=1)
    rm, rv = np.zeros(2, dtype), np.ones(2, dtype)
    want, want_rm, want_rv = ref.instance_norm(x, w, b, rm, rv, momentum=0.2)
    y = fn.instance_norm(dev(x), w, b, rm, rv, momentum=0.2)  # host running stats, in place
    close(y, want, dtype)
    np.testing.assert_allclose(rm, want_rm, rtol=TOL[dtype], atol=TOL[dtype])
    np.testing.assert_allclose(rv, want_rv, rtol=TOL[dtype])
    for g, r in zip(fn.instance_norm_backward(dev(dy), dev(x), w, b),
                    ref.instance_norm_backward(dy, x, w, b)):
        close(g, r, dtype, 10)
    y = fn.instance_norm(dev(x), None, None, rm, rv, training=False)
    close(y, ref.instance_norm(x, None, None, rm, rv, training=False)[0], dtype)
    for groups in (1, 2):
        y, mean, invstd = fn.group_norm(dev(x), groups, dev(w), dev(b), return_stats=True)
        close(y, ref.group_norm(x, groups, w, b), dtype)
        assert mean.shape == (2, groups)
        grads = fn.group_norm_backward(dev(dy), dev(x), groups, w, b)
        for g, r in zip(grads, ref.group_norm_backward(dy, x, groups, w, b)):
            close(g, r, dtype, 10)


def test_large_offset_and_moments_on_device():
    rng = np.random.default_rng(2)
    x = (1e6 + rng.standard_normal((2, 2, 70))).astype(np.float32)
    y = fn.batch_norm(dev(x), training=True)
    assert np.abs(host(y) - ref.batch_norm(x, training=True)[0]).max() < 1e-5
    m = fn.moments(dev(x), (0, 2))
    np.testing.assert_allclose(host(m.mean), x.astype(np.float64).mean(axis=(0, 2)), rtol=1e-12)
    np.testing.assert_allclose(host(m.m2) / m.count, x.astype(np.float64).var(axis=(0, 2)), rtol=1e-9)
    with pytest.raises(ValueError, match="consecutive"):
        fn.moments(dev(x), 1)


def test_device_errors_and_in_place():
    x, dy, w, b = make((1, 3, 4), np.float32)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        fn.batch_norm(dev(np.ones((1, 3), np.float32)), training=True)
    with pytest.raises(ValueError, match="weight must have shape"):
        fn.batch_norm(dev(x), weight=np.ones(4, np.float32), training=True)
    with pytest.raises(ValueError, match="divide"):
        fn.group_norm(dev(x), 2)
    with pytest.raises(TypeError, match="out must be a device array"):
        fn.group_norm(dev(x), 3, out=np.empty_like(x))
    dx = dev(x)
    fn.group_norm(dx, 3, out=dx)
    np.testing.assert_allclose(host(dx), ref.group_norm(x, 3), rtol=3e-5, atol=3e-5)
