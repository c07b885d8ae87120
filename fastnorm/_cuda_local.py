"""LRN on CUDA device arrays (the numba.cuda kernels in kernels/cuda/local.py).

``fastnorm.functional.local_response_norm`` and its backward come here when their first
argument is a device array (``fastnorm._dispatch.device_variant``): same arguments, same
semantics, results as numba device arrays. Device arrays must be C-contiguous. The other ops
of fastnorm.local have no CUDA kernels yet: they raise NotImplementedError on device arrays.
"""
import numpy as np
from numba import cuda

from ._cuda_norm import _device, _out
from .kernels.cuda import local as K
from .local import _lrn_args

_F64 = np.dtype(np.float64)


def _shape3(x):
    N, C = x.shape[0], x.shape[1]
    return (N, C, x.size // (N * C))


def _checked(x, size, alpha, beta, k):
    x = _device(x, "x")
    if len(x.shape) < 3:
        raise ValueError(f"x must have at least 3 dimensions (N, C, *), got shape {tuple(x.shape)}")
    # the host checks of the scalars (a size-1 host array stands in for x's checks)
    _, size, alpha, beta, k, mode = _lrn_args(np.empty((1, 1, 1), x.dtype), size, alpha, beta, k)
    return x, size, alpha, beta, k, mode


def _same_memory(a, b):
    if a is b:
        return True
    try:
        return a.__cuda_array_interface__["data"][0] == b.__cuda_array_interface__["data"][0]
    except AttributeError:  # the simulator's arrays wrap NumPy arrays
        return np.may_share_memory(getattr(a, "_ary", a), getattr(b, "_ary", b))


def local_response_norm(x, size, *, alpha=1e-4, beta=0.75, k=1.0, out=None):
    """``fastnorm.functional.local_response_norm`` on device arrays."""
    x, size, alpha, beta, k, mode = _checked(x, size, alpha, beta, k)
    shape, dt = tuple(x.shape), x.dtype
    y = _out(out, shape, dt)
    if x.size:
        N, C, inner = _shape3(x)
        cols = N * inner
        # the window reads channels already written: in place goes through a scratch array
        target = cuda.device_array(shape, dt) if _same_memory(x, y) else y
        K.lrn_forward[(cols + K.THREADS - 1) // K.THREADS, K.THREADS](
            x.reshape(N, C, inner), target.reshape(N, C, inner),
            cuda.device_array((C, cols), _F64), cuda.device_array((C, cols), _F64),
            cuda.device_array((size, cols), _F64), cuda.device_array((size, cols), _F64),
            size, size // 2, alpha / size, k, beta, mode)
        if target is not y:
            y.copy_to_device(target)
    return y


def local_response_norm_backward(dy, x, size, *, alpha=1e-4, beta=0.75, k=1.0, out=None):
    """``fastnorm.functional.local_response_norm_backward`` on device arrays."""
    x, size, alpha, beta, k, mode = _checked(x, size, alpha, beta, k)
    shape, dt = tuple(x.shape), x.dtype
    dy = _device(dy, "dy", dt, shape)
    dx = _out(out, shape, dt)
    if x.size:
        N, C, inner = _shape3(x)
        cols = N * inner
        s3 = (N, C, inner)
        K.lrn_backward[(cols + K.THREADS - 1) // K.THREADS, K.THREADS](
            dy.reshape(*s3), x.reshape(*s3), dx.reshape(*s3),
            cuda.device_array((C, cols), _F64), cuda.device_array((C, cols), _F64),
            cuda.device_array((C, cols), _F64), cuda.device_array((size, cols), _F64),
            cuda.device_array((size, cols), _F64), size, size // 2, alpha / size, k, beta, mode)
    return dx


def _not_on_device(name):
    def f(*args, **kwargs):
        raise NotImplementedError(f"{name} has no CUDA kernel yet: pass host (NumPy) arrays")

    f.__name__ = name
    return f


lp_normalize = _not_on_device("lp_normalize")
lp_normalize_backward = _not_on_device("lp_normalize_backward")
weight_norm = _not_on_device("weight_norm")
weight_norm_backward = _not_on_device("weight_norm_backward")
cosine_linear = _not_on_device("cosine_linear")
cosine_linear_backward = _not_on_device("cosine_linear_backward")
