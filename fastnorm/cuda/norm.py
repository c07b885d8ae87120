"""LayerNorm and RMSNorm on CUDA device arrays (the numba.cuda kernels in kernels/cuda/norm.py).

``fastnorm.functional.layer_norm`` and friends come here when their first argument is a device
array (``fastnorm._dispatch.device_variant``): same arguments, same semantics, results as numba
device arrays. Other array arguments may be device arrays or host arrays (copied over). Device
arrays must be C-contiguous and of x's dtype (no conversion kernels on the device); the
statistics are float64, as on the CPU.
"""
import math

import numpy as np
from numba import cuda

from .. import _validation as v
from .._dispatch import on_device
from ..kernels.cuda import norm as K

_F64 = np.dtype(np.float64)
_COLUMN_THREADS = 128


def _device(a, name, dtype=None, shape=None):
    """``a`` as a C-contiguous numba device array of ``dtype``/``shape`` (checked), or None."""
    if a is None:
        return None
    if on_device(a):
        d = a if hasattr(a, "copy_to_host") else cuda.as_cuda_array(a)
        if np.dtype(d.dtype) not in v.FLOAT_DTYPES:
            raise TypeError(f"{name} must be a float32 or float64 array, got dtype {d.dtype}")
    else:
        d = v.float_array(a, name)
    if dtype is not None and d.dtype != dtype:
        if on_device(a):
            raise TypeError(f"{name} must have dtype {dtype} (x's), got {d.dtype}")
        d = d.astype(dtype)
    if shape is not None and tuple(d.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(d.shape)}")
    if not on_device(a):
        return cuda.to_device(np.ascontiguousarray(d))
    if not d.is_c_contiguous():
        raise ValueError(f"{name}: device arrays must be C-contiguous")
    return d


def _standin(x):
    """A zero-memory host array of x's shape and dtype, for the CPU path's checks."""
    return np.broadcast_to(np.zeros((), x.dtype), tuple(x.shape))


def _out(out, shape, dtype):
    if out is None:
        return cuda.device_array(shape, dtype)
    if not on_device(out):
        raise TypeError("out must be a device array when x is one")
    return _device(out, "out", dtype, shape)


def _rows(x, axis):
    x = _device(x, "x")
    ndim = len(x.shape)
    if ndim == 0:
        raise ValueError("x must have at least one dimension, got a 0-d array")
    axis = v.normalize_axis(axis, ndim)
    return x, axis, math.prod(x.shape[:axis]), math.prod(x.shape[axis:])


def _forward(x, weight, bias, axis, eps, out, center):
    x, axis, m, n = _rows(x, axis)
    shape, dt = tuple(x.shape), x.dtype
    w = _device(weight, "weight", dt, shape[axis:])
    b = _device(bias, "bias", dt, shape[axis:])
    eps = v.check_eps(eps)
    y = _out(out, shape, dt)
    stat_shape = shape[:axis]
    if not m * n:
        nan = np.full(stat_shape, np.nan)  # statistics of empty rows are undefined
        return y, cuda.to_device(nan), cuda.to_device(nan)
    mean = cuda.device_array(stat_shape, _F64)
    rstd = cuda.device_array(stat_shape, _F64)
    dummy = cuda.device_array(1, dt)
    K.norm_forward[m, K.THREADS](
        x.reshape(m, n), dummy if w is None else w.reshape(n), dummy if b is None else b.reshape(n),
        y.reshape(m, n), mean.reshape(m), rstd.reshape(m), center, w is not None, b is not None, eps)
    return y, mean, rstd


def _stats(s, name, shape, m):
    d = _device(s, name, _F64 if not on_device(s) else None, shape)
    if d.dtype != _F64:
        raise TypeError(f"{name} must be float64 (as returned by the forward), got {d.dtype}")
    return d.reshape(m)


def _backward(dy, x, weight, bias, axis, eps, out, stats, center):
    x, axis, m, n = _rows(x, axis)
    shape, dt = tuple(x.shape), x.dtype
    dy = _device(dy, "dy", dt, shape)
    w = _device(weight, "weight", dt, shape[axis:])
    b = _device(bias, "bias", dt, shape[axis:])
    eps = v.check_eps(eps)
    dx = _out(out, shape, dt)
    stat_shape = shape[:axis]
    if stats is None:
        _, mean, rstd = _forward(x, None, None, axis, eps, None, center)
        mean, rstd = mean.reshape(m), rstd.reshape(m)
    elif center:
        if not isinstance(stats, (tuple, list)) or len(stats) != 2:
            raise ValueError("stats must be the (mean, invstd) pair returned with return_stats=True")
        mean = _stats(stats[0], "stats[0] (mean)", stat_shape, m)
        rstd = _stats(stats[1], "stats[1] (invstd)", stat_shape, m)
    else:
        if isinstance(stats, (tuple, list)):
            if len(stats) != 1:
                raise ValueError("stats must be the invrms array returned with return_stats=True")
            stats = stats[0]
        rstd = _stats(stats, "stats (invrms)", stat_shape, m)
        mean = cuda.to_device(np.zeros(m))  # RMSNorm does not center
    dw = cuda.device_array(n if w is not None else 1, dt)
    db = cuda.device_array(n if b is not None else 1, dt)
    if m and n:
        dy2, x2 = dy.reshape(m, n), x.reshape(m, n)
        if w is not None or b is not None:
            # before the rows: dx may be dy
            K.norm_backward_columns[(n + _COLUMN_THREADS - 1) // _COLUMN_THREADS, _COLUMN_THREADS](
                dy2, x2, mean, rstd, dw, db, w is not None, b is not None)
        K.norm_backward_rows[m, K.THREADS](
            dy2, x2, dw if w is None else w.reshape(n), dx.reshape(m, n), mean, rstd, center,
            w is not None)
    elif n:
        zeros = np.zeros(n, dt)  # no rows: the column sums are empty
        dw, db = cuda.to_device(zeros), cuda.to_device(zeros)
    dweight = None if w is None else dw.reshape(shape[axis:])
    dbias = None if b is None else db.reshape(shape[axis:])
    return dx, dweight, dbias


def layer_norm(x, weight=None, bias=None, *, axis=-1, eps=1e-5, out=None, return_stats=False):
    """``fastnorm.functional.layer_norm`` on device arrays."""
    y, mean, rstd = _forward(x, weight, bias, axis, eps, out, True)
    return (y, mean, rstd) if return_stats else y


def layer_norm_backward(dy, x, weight=None, bias=None, *, axis=-1, eps=1e-5, out=None,
                        return_stats=False, stats=None):
    """``fastnorm.functional.layer_norm_backward`` on device arrays."""
    return _backward(dy, x, weight, bias, axis, eps, out, stats, True)


def rms_norm(x, weight=None, *, axis=-1, eps=1e-6, out=None, return_stats=False):
    """``fastnorm.functional.rms_norm`` on device arrays."""
    y, _, rstd = _forward(x, weight, None, axis, eps, out, False)
    return (y, rstd) if return_stats else y


def rms_norm_backward(dy, x, weight=None, *, axis=-1, eps=1e-6, out=None, return_stats=False,
                      stats=None):
    """``fastnorm.functional.rms_norm_backward`` on device arrays."""
    dx, dweight, _ = _backward(dy, x, weight, None, axis, eps, out, stats, False)
    return dx, dweight
