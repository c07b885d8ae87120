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
