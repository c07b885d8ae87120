"""BatchNorm, InstanceNorm, GroupNorm and moments on CUDA device arrays (kernels/cuda/batch.py).

``fastnorm.functional.batch_norm`` and friends come here when their first argument is a device
array (``fastnorm._dispatch.device_variant``): same arguments and semantics, results as numba
device arrays. The statistics are computed on the device; the per-channel coefficients (C or
N*C numbers) are formed on the host with the CPU path's formulas, and the elementwise pass runs
on the device. Running statistics may be host arrays (updated in place) or device arrays
(updated in place on the device). The arguments are checked by the CPU path's own checks, run
on a zero-size stand-in of x's shape and dtype.
"""
import math

import numpy as np
from numba import cuda

from ..ops import batch as B
from .norm import _device, _out, _standin
from .._dispatch import on_device
from ..kernels.cuda import batch as K

_F64 = np.dtype(np.float64)
_ELEMENT_THREADS = 256
_COLUMN_THREADS = 128


def _x(x, name="x"):
    x = _device(x, name)
    if len(x.shape) < 2:
        raise ValueError(f"{name} must have at least 2 dimensions (N, C, *), got shape {tuple(x.shape)}")
    return x


def _host(a):
    if a is None:
        return None
    return a.copy_to_host() if on_device(a) else a


def _write_back(a, host):
    if a is not None and on_device(a):
        a.copy_to_device(np.ascontiguousarray(host, np.dtype(a.dtype)))


def _grid(n, threads):
    return max(1, (n + threads - 1) // threads)


def _segment_stats(x3):
    outer, C, _ = x3.shape
    mean = cuda.device_array((outer, C), _F64)
    m2 = cuda.device_array((outer, C), _F64)
    K.segment_moments[outer * C, K.THREADS](x3, mean, m2)
    return mean, m2


#: below this ``inner`` (channels-last, (N, C)) a block per channel replaces a block per segment
_CHANNEL_BLOCKS_BELOW = 32


def _channel_stats(x3):
    """(mean, m2) per channel, host float64 (C,)."""
    outer, C, inner = x3.shape
    if inner < _CHANNEL_BLOCKS_BELOW:
        mean = cuda.device_array(C, _F64)
        m2 = cuda.device_array(C, _F64)
        K.channel_moments[C, K.THREADS](x3, mean, m2)
        return mean.copy_to_host(), m2.copy_to_host()
    mean_s, m2_s = _segment_stats(x3)
    mean = cuda.device_array(C, _F64)
    m2 = cuda.device_array(C, _F64)
    K.merge_segments[_grid(C, _COLUMN_THREADS), _COLUMN_THREADS](mean_s, m2_s, float(inner), mean, m2)
    return mean.copy_to_host(), m2.copy_to_host()


def _grad_sums(dy3, x3, mean, rstd, per_channel):
    outer, C, inner = x3.shape
    if per_channel and inner < _CHANNEL_BLOCKS_BELOW:
        o1 = cuda.device_array(C, _F64)
        o2 = cuda.device_array(C, _F64)
        K.channel_grad_sums[C, K.THREADS](dy3, x3, cuda.to_device(np.ascontiguousarray(mean)),
                                          cuda.to_device(np.ascontiguousarray(rstd)), o1, o2)
        return o1.copy_to_host(), o2.copy_to_host()
    s1 = cuda.device_array((outer, C), _F64)
    s2 = cuda.device_array((outer, C), _F64)
    K.segment_grad_sums[outer * C, K.THREADS](dy3, x3, cuda.to_device(np.ascontiguousarray(mean)),
                                              cuda.to_device(np.ascontiguousarray(rstd)), s1, s2)
    if not per_channel:
        return s1.copy_to_host(), s2.copy_to_host()
    o1 = cuda.device_array(C, _F64)
    o2 = cuda.device_array(C, _F64)
    K.sum_segments[_grid(C, _COLUMN_THREADS), _COLUMN_THREADS](s1, s2, o1, o2)
    return o1.copy_to_host(), o2.copy_to_host()


def _affine(x3, y3, mean, scale, shift):
    args = [cuda.to_device(np.ascontiguousarray(np.atleast_2d(a), _F64)) for a in (mean, scale, shift)]
    K.affine_apply[_grid(x3.size, _ELEMENT_THREADS), _ELEMENT_THREADS](x3, *args, y3)


def _grad(dy3, x3, dx3, mean, a, b, c):
    args = [cuda.to_device(np.ascontiguousarray(np.atleast_2d(t), _F64)) for t in (mean, a, b, c)]
    K.grad_apply[_grid(x3.size, _ELEMENT_THREADS), _ELEMENT_THREADS](dy3, x3, *args, dx3)


def _dev(a):
    return None if a is None else cuda.to_device(np.ascontiguousarray(a))


def _view3(x, axis):
    shape = tuple(x.shape)
    outer, C, inner = math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:])
    return x.reshape(outer, C, inner), outer, C, inner


# ---------------------------------------------------------------- batch_norm


def batch_norm(x, running_mean=None, running_var=None, weight=None, bias=None, *, training=False,
               momentum=0.1, eps=1e-5, axis=1, out=None, return_stats=False,
               num_batches_tracked=None):
    """``fastnorm.functional.batch_norm`` on device arrays."""
    x = _x(x)
    rm_h, rv_h = _host(running_mean), _host(running_var)
    _, axis, C, use_batch, update, rm, rv, w, b, eps = B._bn_setup(
        _standin(x), rm_h, rv_h, _host(weight), _host(bias), training, axis, eps)
    factor = B._momentum(momentum, num_batches_tracked) if update else 0.0
    y = _out(out, tuple(x.shape), x.dtype)
    x3, outer, C, inner = _view3(x, axis)
    if use_batch:
        if x.size == 0:
            mean = invstd = np.full(C, np.nan)
        else:
            if training and outer * inner == 1:
                raise ValueError(f"Expected more than 1 value per channel when training, got input size {tuple(x.shape)}")
            mean, m2 = _channel_stats(x3)
            n = outer * inner
            invstd = 1.0 / np.sqrt(m2 / n + eps)
            if update:
                with np.errstate(divide="ignore", invalid="ignore"):
                    rm[...] = (1.0 - factor) * np.asarray(rm, _F64) + factor * mean
                    rv[...] = (1.0 - factor) * np.asarray(rv, _F64) + factor * (m2 / (n - 1))
                _write_back(running_mean, rm)
                _write_back(running_var, rv)
    else:
        mean = np.asarray(rm, _F64)
        invstd = 1.0 / np.sqrt(np.asarray(rv, _F64) + eps)
    if x.size:
        _affine(x3, y.reshape(x3.shape), mean, invstd * B._f64(w, C, 1.0), B._f64(b, C, 0.0))
    return (y, _dev(mean), _dev(invstd)) if return_stats else y


def _stats(stats, shape):
    return B._stats_pair(tuple(_host(s) for s in stats) if isinstance(stats, (tuple, list)) else stats, shape)


def batch_norm_backward(dy, x, running_mean=None, running_var=None, weight=None, bias=None, *,
                        training=False, momentum=0.1, eps=1e-5, axis=1, out=None,
                        return_stats=False, num_batches_tracked=None, stats=None):
    """``fastnorm.functional.batch_norm_backward`` on device arrays."""
    x = _x(x)
    _, axis, C, use_batch, _, rm, rv, w, b, eps = B._bn_setup(
        _standin(x), _host(running_mean), _host(running_var), _host(weight), _host(bias), training,
        axis, eps, backward=True)
    dy = _device(dy, "dy", x.dtype, tuple(x.shape))
    dx = _out(out, tuple(x.shape), x.dtype)
    x3, outer, C, inner = _view3(x, axis)
    dt = np.dtype(x.dtype)
    if x.size == 0:
        zeros = np.zeros(C, dt)
        return dx, None if w is None else _dev(zeros), None if b is None else _dev(zeros)
    if stats is not None:
        mean, invstd = _stats(stats, (C,))
    elif use_batch:
        mean, m2 = _channel_stats(x3)
        invstd = 1.0 / np.sqrt(m2 / (outer * inner) + eps)
    else:
        mean = np.asarray(rm, _F64)
        invstd = 1.0 / np.sqrt(np.asarray(rv, _F64) + eps)
    dy3 = dy.reshape(x3.shape)
    s1, s2 = _grad_sums(dy3, x3, mean.reshape(1, C), invstd.reshape(1, C), True)
    a = invstd * B._f64(w, C, 1.0)
    if use_batch:
        n = outer * inner
        bcoef, ccoef = -a * invstd * (s2 / n), -a * (s1 / n)
    else:
        bcoef = ccoef = np.zeros(C)
    _grad(dy3, x3, dx.reshape(x3.shape), mean, a, bcoef, ccoef)
    return dx, None if w is None else _dev(s2.astype(dt)), None if b is None else _dev(s1.astype(dt))


# ---------------------------------------------------------------- instance_norm


def instance_norm(x, weight=None, bias=None, running_mean=None, running_var=None, *,
                  training=True, momentum=0.1, eps=1e-5, out=None, return_stats=False):
    """``fastnorm.functional.instance_norm`` on device arrays."""
    x = _x(x)
    _, C, update, rm, rv, w, b, eps = B._in_setup(
        _standin(x), _host(weight), _host(bias), _host(running_mean), _host(running_var), training, eps)
    y = _out(out, tuple(x.shape), x.dtype)
    x3, N, C, inner = _view3(x, 1)
    if training:
        if x.size and inner == 1:
            raise ValueError(f"Expected more than 1 spatial element when training, got input size {tuple(x.shape)}")
        if x.size == 0:
            mean = invstd = np.full((N, C), np.nan)
        else:
            mean_d, m2_d = _segment_stats(x3)
            mean, m2 = mean_d.copy_to_host(), m2_d.copy_to_host()
            invstd = 1.0 / np.sqrt(m2 / inner + eps)
            if update and N:
                f = B._momentum(momentum, None)
                rm[...] = (1.0 - f) * np.asarray(rm, _F64) + f * mean.mean(axis=0)
                rv[...] = (1.0 - f) * np.asarray(rv, _F64) + f * (m2 / (inner - 1)).mean(axis=0)
                _write_back(running_mean, rm)
                _write_back(running_var, rv)
    else:
        mean = np.broadcast_to(np.asarray(rm, _F64), (N, C)).copy()
        invstd = np.broadcast_to(1.0 / np.sqrt(np.asarray(rv, _F64) + eps), (N, C)).copy()
    if x.size:
        _affine(x3, y.reshape(x3.shape), mean, invstd * B._f64(w, C, 1.0),
                np.broadcast_to(B._f64(b, C, 0.0), (N, C)))
    return (y, _dev(mean), _dev(invstd)) if return_stats else y


def instance_norm_backward(dy, x, weight=None, bias=None, running_mean=None, running_var=None, *,
                           training=True, momentum=0.1, eps=1e-5, out=None, return_stats=False,
                           stats=None):
    """``fastnorm.functional.instance_norm_backward`` on device arrays."""
    x = _x(x)
    _, C, _, rm, rv, w, b, eps = B._in_setup(
        _standin(x), _host(weight), _host(bias), _host(running_mean), _host(running_var), training, eps)
    dy = _device(dy, "dy", x.dtype, tuple(x.shape))
    dx = _out(out, tuple(x.shape), x.dtype)
    x3, N, C, inner = _view3(x, 1)
    dt = np.dtype(x.dtype)
    if x.size == 0:
        zeros = np.zeros(C, dt)
        return dx, None if w is None else _dev(zeros), None if b is None else _dev(zeros)
    if stats is not None:
        mean, invstd = _stats(stats, (N, C))
    elif training:
        mean_d, m2_d = _segment_stats(x3)
        mean = mean_d.copy_to_host()
        invstd = 1.0 / np.sqrt(m2_d.copy_to_host() / inner + eps)
    else:
        mean = np.broadcast_to(np.asarray(rm, _F64), (N, C)).copy()
        invstd = np.broadcast_to(1.0 / np.sqrt(np.asarray(rv, _F64) + eps), (N, C)).copy()
    dy3 = dy.reshape(x3.shape)
    s1, s2 = _grad_sums(dy3, x3, mean, invstd, False)
    a = invstd * B._f64(w, C, 1.0)
    if training:
        bcoef, ccoef = -a * invstd * (s2 / inner), -a * (s1 / inner)
    else:
        bcoef = ccoef = np.zeros((N, C))
    _grad(dy3, x3, dx.reshape(x3.shape), mean, a, bcoef, ccoef)
    return (dx, None if w is None else _dev(s2.sum(axis=0).astype(dt)),
            None if b is None else _dev(s1.sum(axis=0).astype(dt)))


# ---------------------------------------------------------------- group_norm


def group_norm(x, num_groups, weight=None, bias=None, *, eps=1e-5, out=None, return_stats=False):
    """``fastnorm.functional.group_norm`` on device arrays."""
    x = _x(x)
    _, C, G, w, b, eps = B._gn_setup(_standin(x), num_groups, _host(weight), _host(bias), eps)
    y = _out(out, tuple(x.shape), x.dtype)
    N = x.shape[0]
    if x.size == 0:
        mean = invstd = np.full((N, G), np.nan)
    else:
        L = x.size // (N * G)
        mean_d, m2_d = _segment_stats(x.reshape(N, G, L))
        mean = mean_d.copy_to_host()
        invstd = 1.0 / np.sqrt(m2_d.copy_to_host() / L + eps)
        per = C // G
        x3 = x.reshape(N, C, L // per)
        _affine(x3, y.reshape(x3.shape), np.repeat(mean, per, axis=1),
                np.repeat(invstd, per, axis=1) * B._f64(w, C, 1.0),
                np.broadcast_to(B._f64(b, C, 0.0), (N, C)))
    return (y, _dev(mean), _dev(invstd)) if return_stats else y


def group_norm_backward(dy, x, num_groups, weight=None, bias=None, *, eps=1e-5, out=None,
                        return_stats=False, stats=None):
    """``fastnorm.functional.group_norm_backward`` on device arrays."""
    x = _x(x)
    _, C, G, w, b, eps = B._gn_setup(_standin(x), num_groups, _host(weight), _host(bias), eps)
    dy = _device(dy, "dy", x.dtype, tuple(x.shape))
    dx = _out(out, tuple(x.shape), x.dtype)
    N = x.shape[0]
    dt = np.dtype(x.dtype)
    if x.size == 0:
        zeros = np.zeros(C, dt)
        return dx, None if w is None else _dev(zeros), None if b is None else _dev(zeros)
    L = x.size // (N * G)
    if stats is not None:
        mean, invstd = _stats(stats, (N, G))
    else:
        mean_d, m2_d = _segment_stats(x.reshape(N, G, L))
        mean = mean_d.copy_to_host()
        invstd = 1.0 / np.sqrt(m2_d.copy_to_host() / L + eps)
    per = C // G
    x3 = x.reshape(N, C, L // per)
    dy3 = dy.reshape(x3.shape)
    mean_c, rstd_c = np.repeat(mean, per, axis=1), np.repeat(invstd, per, axis=1)
    s1, s2 = _grad_sums(dy3, x3, mean_c, rstd_c, False)
    wc = B._f64(w, C, 1.0)
    mg = (s1 * wc).reshape(N, G, per).sum(axis=2) / L
    mgx = (s2 * wc).reshape(N, G, per).sum(axis=2) / L
    _grad(dy3, x3, dx.reshape(x3.shape), mean_c, rstd_c * wc,
          np.repeat(-invstd * invstd * mgx, per, axis=1), np.repeat(-invstd * mg, per, axis=1))
    return (dx, None if w is None else _dev(s2.sum(axis=0).astype(dt)),
            None if b is None else _dev(s1.sum(axis=0).astype(dt)))


# ---------------------------------------------------------------- moments


def moments(x, axis=None):
    """``fastnorm.functional.moments`` on a device array: mean and m2 come back as device
    arrays. The kept axes must be consecutive (as for every normalization layout)."""
    x = _device(x, "x")
    shape = tuple(x.shape)
    red = B._reduced_axes(axis, len(shape))
    kept = tuple(a for a in range(len(shape)) if a not in red)
    if kept and kept != tuple(range(kept[0], kept[-1] + 1)):
        raise ValueError(f"moments of a device array need consecutive kept axes, got axis={axis}")
    kept_shape = tuple(shape[a] for a in kept)
    count = math.prod(shape[a] for a in red)
    a0 = kept[0] if kept else 0
    a1 = kept[-1] + 1 if kept else 0
    outer, C, inner = math.prod(shape[:a0]), math.prod(shape[a0:a1]), math.prod(shape[a1:])
    if count == 0 or C == 0:
        nan = np.full(kept_shape, np.nan)
        return B.Moments(count, _dev(nan), _dev(nan))
    mean, m2 = _channel_stats(x.reshape(outer, C, inner))
    return B.Moments(count, _dev(mean.reshape(kept_shape)), _dev(m2.reshape(kept_shape)))
