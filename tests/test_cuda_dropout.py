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
