"""LRN on CUDA device arrays (the numba.cuda kernels in kernels/cuda/local.py).

``fastnorm.functional.local_response_norm`` and its backward come here when their first
argument is a device array (``fastnorm._dispatch.device_variant``): same arguments, same
semantics, results as numba device arrays; so do lp_normalize and weight_norm (+ backwards),
with simple kernels (one thread per normalized slice), and cosine_linear (a tiled
shared-memory matmul with float64 sums, and block-per-row float64 norms). Device arrays must
be C-contiguous.
"""
import math

import numpy as np
from numba import cuda

from .norm import _device, _out, _standin
from ..kernels.cuda import local as K
from ..ops.local import _axis3, _cos_args, _lp_args, _lrn_args, _wn_layout

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


def _blocks(n):
    return (max(n, 1) + K.THREADS - 1) // K.THREADS


def _lp(dy, x, p, axis, eps, out):
    x = _device(x, "x")
    if len(x.shape) == 0:
        raise ValueError("x must have at least one dimension, got a 0-d array")
    host = np.empty((1,) * len(x.shape), x.dtype)  # the host checks of the scalars
    _, p, mode, axis, eps = _lp_args(host, p, axis, eps)
    shape, dt = tuple(x.shape), x.dtype
    if dy is not None:
        dy = _device(dy, "dy", dt, shape)
    y = _out(out, shape, dt)
    if x.size:
        outer, n, inner = _axis3(shape, axis)
        s3 = (outer, n, inner)
        norms = cuda.device_array((outer, inner), _F64)
        none = cuda.device_array((1, 1), _F64)
        if dy is None:
            K.lp_forward[_blocks(outer * inner), K.THREADS](
                x.reshape(*s3), none, y.reshape(*s3), norms, p, mode, eps, False)
        else:
            K.lp_backward[_blocks(outer * inner), K.THREADS](
                dy.reshape(*s3), x.reshape(*s3), none, y.reshape(*s3), norms,
                cuda.device_array((outer, inner), _F64), p, mode, eps, False)
    return y


def lp_normalize(x, *, p=2, axis=-1, eps=1e-12, out=None):
    """``fastnorm.functional.lp_normalize`` on device arrays."""
    return _lp(None, x, p, axis, eps, out)


def lp_normalize_backward(dy, x, *, p=2, axis=-1, eps=1e-12, out=None):
    """``fastnorm.functional.lp_normalize_backward`` on device arrays."""
    return _lp(dy, x, p, axis, eps, out)


def _wn(v, g, axis):
    v = _device(v, "v")
    g_host = g.copy_to_host() if hasattr(g, "copy_to_host") else g
    shape = tuple(v.shape)
    # shape checks of g on the host (an empty stand-in array of v's shape)
    _, axis, _, g2, gshape = _wn_layout(np.lib.stride_tricks.as_strided(
        np.empty(1, v.dtype), shape, (0,) * len(shape)), g_host, axis)
    if axis is None:
        s3 = (1, 1, v.size)
    else:
        s3 = (math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:]))
    return v, s3, cuda.to_device(np.ascontiguousarray(g2.reshape(-1))), gshape


def weight_norm(v, g, *, axis=0, out=None):
    """``fastnorm.functional.weight_norm`` on device arrays."""
    v, s3, g64, _ = _wn(v, g, axis)
    w = _out(out, tuple(v.shape), v.dtype)
    if v.size:
        K.wn_forward[_blocks(s3[1]), K.THREADS](v.reshape(*s3), g64, w.reshape(*s3))
    return w


def weight_norm_backward(dw, v, g, *, axis=0, out=None):
    """``fastnorm.functional.weight_norm_backward`` on device arrays: (dv, dg), dg in g's
    shape, as device arrays; ``out`` receives dv."""
    v, s3, g64, gshape = _wn(v, g, axis)
    dw = _device(dw, "dw", v.dtype, tuple(v.shape))
    dv = _out(out, tuple(v.shape), v.dtype)
    dg = cuda.device_array(s3[1], v.dtype)
    if v.size:
        K.wn_backward[_blocks(s3[1]), K.THREADS](dw.reshape(*s3), v.reshape(*s3), g64,
                                                  dv.reshape(*s3), dg)
    return dv, dg.reshape(*gshape) if gshape else dg.reshape(1)


def _cos(x, w, eps):
    """(x as (m, K) rows, w, row norms of both (float64 device arrays), eps, x's shape)."""
    x = _device(x, "x")
    shape = tuple(x.shape)
    wd = _device(w, "w")
    _, _, eps = _cos_args(_standin(x), _standin(wd), eps)  # the host checks, on stand-ins
    n_in = shape[-1]
    x2 = x.reshape(math.prod(shape[:-1]), n_in)
    return x2, wd, _row_norms(x2), _row_norms(wd), eps, shape


def _row_norms(a):
    norms = cuda.device_array(a.shape[0], _F64)
    if a.shape[0]:
        if a.shape[1]:
            K.row_norms[a.shape[0], K.ROW_THREADS](a, norms)
        else:
            norms = cuda.to_device(np.zeros(a.shape[0]))
    return norms


def _tiles(rows, cols):
    """Launch shape of the 2-D cosine kernels: x over columns, y over rows, TILE x TILE."""
    return ((cols + K.TILE - 1) // K.TILE, (rows + K.TILE - 1) // K.TILE), (K.TILE, K.TILE)


def _matmul(a, b, ta, tb, m, n):
    c = cuda.device_array((m, n), _F64)
    if m and n:
        K.matmul[_tiles(m, n)](a, b, ta, tb, c)
    return c


def _cosine(x2, w, nx, nw, eps, dtype):
    """The forward's y (m, O) in ``dtype``."""
    m, O = x2.shape[0], w.shape[0]
    z = _matmul(x2, w, False, True, m, O)
    y = cuda.device_array((m, O), dtype)
    if m and O:
        K.cosine_scale[_tiles(m, O)](z, nx, nw, eps, y)
    return y


def cosine_linear(x, w, *, eps=1e-8):
    """``fastnorm.functional.cosine_linear`` on device arrays: x @ w.T as a tiled matmul with
    float64 sums (the CPU: BLAS in x's dtype), scaled by the float64 inverse row norms."""
    x2, wd, nx, nw, eps, shape = _cos(x, w, eps)
    return _cosine(x2, wd, nx, nw, eps, x2.dtype).reshape(shape[:-1] + (wd.shape[0],))


def cosine_linear_backward(dy, x, w, *, eps=1e-8):
    """``fastnorm.functional.cosine_linear_backward`` on device arrays: (dx, dw), in float64
    on the device (the CPU: float64 NumPy matmuls), rounded once to x's dtype."""
    x2, wd, nx, nw, eps, shape = _cos(x, w, eps)
    m, Kd, O = x2.shape[0], x2.shape[1], wd.shape[0]
    dy = _device(dy, "dy", x2.dtype, shape[:-1] + (O,)).reshape(m, O)
    dx = cuda.device_array((m, Kd), x2.dtype)
    dw = cuda.device_array((O, Kd), x2.dtype)
    if m and O and Kd:
        y = _cosine(x2, wd, nx, nw, eps, _F64)
        a = cuda.device_array((m, O), _F64)
        b = cuda.device_array((m, O), _F64)
        trow = cuda.device_array(m, _F64)
        tcol = cuda.device_array(O, _F64)
        K.cosine_dy[(m + K.THREADS - 1) // K.THREADS, K.THREADS](dy, y, nx, nw, eps, a, b, trow)
        K.column_dots[(O + K.THREADS - 1) // K.THREADS, K.THREADS](dy, y, tcol)
        gx = _matmul(a, wd, False, False, m, Kd)  # (dy * rw) @ w
        gw = _matmul(b, x2, True, False, O, Kd)   # (dy * rx)^T @ x
        K.cosine_grad[_tiles(m, Kd)](gx, x2, nx, trow, eps, dx)
        K.cosine_grad[_tiles(O, Kd)](gw, wd, nw, tcol, eps, dw)
    elif m * Kd or O * Kd:
        dx = cuda.to_device(np.zeros((m, Kd), x2.dtype))
        dw = cuda.to_device(np.zeros((O, Kd), x2.dtype))
    return dx.reshape(shape), dw
