"""Dropout, Gaussian dropout, penalties and clipping on CUDA device arrays (kernels in
kernels/cuda/dropout.py).

``fastnorm.functional.dropout`` and friends come here when their first argument is a device
array (``fastnorm._dispatch.device_variant``): same arguments, same semantics, device arrays
back. The mask is the CPU backends' mask bit for bit (same Philox stream); Gaussian noise
equals the CPU's within a few ulps (CUDA's libdevice log/cos). Device arrays must be
C-contiguous.

Penalties and clipping (``fastnorm.functional.l1_penalty``, ``grad_norm``, ``clip_grad_norm_``
...) come here when their array list holds device arrays; every array of the list must then be
a device array (a mix raises TypeError). Norms and penalties come back as 0-d float64 device
arrays (the CPU returns a Python float), computed on the device; clip_grad_norm_ scales on the
device too and reads the total back only for ``error_if_nonfinite=True``. Also
``fastnorm.init``'s uniform_/normal_ family fills device tensors with the CPU's streams.
"""
import math

import numpy as np
from numba import config, cuda

from .. import random as _random
from .norm import _device, _out
from ..ops import regularization as R
from .._dispatch import on_device
from ..ops.dropout import _backward, _forward, check_p, threshold
from ..kernels.cuda import dropout as K

_THREADS = 32 if config.ENABLE_CUDASIM else 256
_MAX_BLOCKS = 4 if config.ENABLE_CUDASIM else 4096


def _grid(work):
    return max(1, min(_MAX_BLOCKS, (work + _THREADS - 1) // _THREADS)), _THREADS


def _key(seed):
    return tuple(np.uint64(k) for k in _random.key(seed))


def _flat(x, name, out):
    x = _device(x, name)
    shape = tuple(x.shape)
    y = _out(out, shape, x.dtype)
    n = math.prod(shape)
    return x, y, x.reshape(n), y.reshape(n), n


def _identity(x, out, name):
    x = _device(x, name)
    if out is None:
        return x
    y = _out(out, tuple(x.shape), x.dtype)
    y.copy_to_device(x)
    return y


def _threshold(p):
    """The keep test's 32-bit threshold; 2^32 for p == 1, which no 32-bit word reaches."""
    return np.uint64(1 << 32) if p == 1.0 else np.uint64(threshold(p))


def _apply(x, p, seed, out, name):
    x, y, xf, yf, n = _flat(x, name, out)
    if n:
        dt = np.dtype(x.dtype).type
        scale = dt(0) if p == 1.0 else dt(1.0 / (1.0 - p))  # p == 1: all dropped
        K.dropout_apply[_grid((((n - 1) >> 8) + 1) << 6)](xf, yf, *_key(seed), _threshold(p), scale)
    return y


def dropout(x, p=0.5, *, training=True, seed=None, out=None, return_seed=False):
    """``fastnorm.functional.dropout`` on device arrays."""
    return _forward(_apply, x, check_p(p), training, seed, out, return_seed, _identity)


def dropout_backward(dy, p, seed, *, training=True, out=None):
    """``fastnorm.functional.dropout_backward`` on device arrays."""
    return _backward(_apply, "dropout_backward", dy, check_p(p), seed, training, out, _identity)


def dropout_mask(shape, p, seed):
    """``fastnorm.functional.dropout_mask`` as a device bool array."""
    p = check_p(p)
    seed = _random.check_seed(seed)
    shape = _random._shape(shape)
    n = math.prod(shape)
    mask = cuda.device_array(n, np.bool_)
    if n:
        K.dropout_mask[_grid((((n - 1) >> 8) + 1) << 6)](mask, *_key(seed), _threshold(p))
    return mask.reshape(shape)


def _gaussian(x, p, seed, out, name):
    x, y, xf, yf, n = _flat(x, name, out)
    if n:
        K.normal_apply[_grid(n)](xf, yf, 0, *_key(seed), 1.0, math.sqrt(p / (1.0 - p)), 1)
    return y


def gaussian_dropout(x, p=0.5, *, training=True, seed=None, out=None, return_seed=False):
    """``fastnorm.functional.gaussian_dropout`` on device arrays."""
    return _forward(_gaussian, x, check_p(p, allow_one=False), training, seed, out, return_seed,
                    _identity)


def gaussian_dropout_backward(dy, p, seed, *, training=True, out=None):
    """``fastnorm.functional.gaussian_dropout_backward`` on device arrays."""
    return _backward(_gaussian, "gaussian_dropout_backward", dy, check_p(p, allow_one=False), seed,
                     training, out, _identity)


# ---------------------------------------------------------------- penalties and clipping


def _device_list(arrays, name, writable=False):
    """The device arrays of a list, tuple or dict (flattened views), all checked first."""
    items = list(arrays.values()) if isinstance(arrays, dict) else (
        list(arrays) if isinstance(arrays, (list, tuple)) else [arrays])
    out = []
    for i, a in enumerate(items):
        if not on_device(a):
            raise TypeError(f"{name}[{i}] is a {type(a).__name__}: a list with device arrays must "
                            "hold device arrays only")
        d = _device(a, f"{name}[{i}]")
        out.append(d.reshape(d.size))
    return out


def _reduce_all(flats, kind, p, norms):
    """A 0-d float64 device array: the arrays' reductions combined (combine_partials)."""
    blocks = max([1] + [_grid(a.size)[0] for a in flats])
    partials = cuda.to_device(np.zeros((max(1, len(flats)), blocks)))
    for i, a in enumerate(flats):
        if a.size:
            K.reduce_partials[blocks, K.THREADS](a, kind, float(p), partials[i])
    out = cuda.device_array(1, np.float64)
    K.combine_partials[1, K.THREADS](partials, kind, float(p), norms and bool(flats), out)
    return out.reshape(())


def l1_penalty(arrays):
    """``fastnorm.functional.l1_penalty`` of device arrays: a 0-d float64 device array."""
    return _reduce_all(_device_list(arrays, "arrays"), K.SUM_ABS, 1.0, False)


def l2_penalty(arrays):
    """``fastnorm.functional.l2_penalty`` of device arrays: a 0-d float64 device array."""
    return _reduce_all(_device_list(arrays, "arrays"), K.SUM_SQ, 2.0, False)


def _norm_kind(norm_type):
    p = R._norm_type(norm_type)
    kind = {math.inf: K.MAX_ABS, 1.0: K.SUM_ABS, 2.0: K.SUM_SQ}.get(p, K.SUM_POW)
    return kind, (0.0 if p == math.inf else p)


def grad_norm(grads, norm_type=2.0):
    """``fastnorm.functional.grad_norm`` of device arrays: a 0-d float64 device array."""
    kind, p = _norm_kind(norm_type)
    return _reduce_all(_device_list(grads, "grads"), kind, p, True)


def clip_grad_norm_(grads, max_norm, norm_type=2.0, error_if_nonfinite=False, foreach=None):
    """``fastnorm.functional.clip_grad_norm_`` on device arrays, scaled in place on the device;
    returns the total norm as a 0-d float64 device array."""
    kind, p = _norm_kind(norm_type)
    flats = _device_list(grads, "grads")
    max_norm = float(max_norm)
    total = _reduce_all(flats, kind, p, True)
    if not flats:
        return total
    if error_if_nonfinite:
        t = float(total.copy_to_host())
        if not math.isfinite(t):
            raise RuntimeError(
                f"The total norm of order {float(R._norm_type(norm_type))} for gradients from "
                "`parameters` is non-finite, so it cannot be clipped. To disable this error and "
                "scale the gradients by the non-finite norm anyway, set "
                "`error_if_nonfinite=False`")
    coefs = {}
    for g in flats:
        dt = np.dtype(g.dtype)
        if dt not in coefs:
            coefs[dt] = cuda.device_array(1, dt)
            K.clip_coef[1, 1](total.reshape(1), max_norm, coefs[dt])
        if g.size:
            K.scale_[_grid(g.size)](g, coefs[dt])
    return total


def _pairs(params, grads):
    ps = _device_list(params, "params")
    gs = _device_list(grads, "grads")
    if len(ps) != len(gs):
        raise ValueError(f"params and grads must have the same length, got {len(ps)} and {len(gs)}")
    for i, (p, g) in enumerate(zip(ps, gs)):
        if p.size != g.size or p.dtype != g.dtype:
            raise ValueError(f"params[{i}] and grads[{i}] must have the same size and dtype on a "
                             f"CUDA device, got {p.size} {p.dtype} and {g.size} {g.dtype}")
    return list(zip(ps, gs))


def _penalty_grad(params, grads, coeff, l1):
    coeff = R._coeff(coeff)
    for p, g in _pairs(params, grads):
        if g.size:
            c = cuda.to_device(np.array([coeff if l1 else 2.0 * coeff], p.dtype))
            K.penalty_grad_[_grid(g.size)](p, g, c, l1)
    return grads


def l1_penalty_grad_(params, grads, coeff=1.0):
    """``fastnorm.functional.l1_penalty_grad_`` on device arrays (same dtype per pair)."""
    return _penalty_grad(params, grads, coeff, True)


def l2_penalty_grad_(params, grads, coeff=1.0):
    """``fastnorm.functional.l2_penalty_grad_`` on device arrays (same dtype per pair)."""
    return _penalty_grad(params, grads, coeff, False)


def l1_prox_(params, threshold):
    """``fastnorm.functional.l1_prox_`` on device arrays, in place."""
    threshold = R._coeff(threshold, "threshold")
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")
    for w in _device_list(params, "params"):
        if w.size:
            K.l1_prox_[_grid(w.size)](w, cuda.to_device(np.array([threshold], w.dtype)))
    return params


# ---------------------------------------------------------------- random fills (fastnorm.random, init)


def _fill_target(out, shape, dt):
    y = _out(out, shape, dt)
    return y, y.reshape(math.prod(shape))


def uniform(shape, low, width, seed, offset, out):
    """``fastnorm.random.uniform`` into a device ``out`` (arguments checked by it)."""
    y, flat = _fill_target(out, shape, out.dtype)
    if flat.size:
        K.uniform_fill[_grid(flat.size)](flat, offset, *_key(seed), low, width)
    return y


def normal(shape, mean, std, seed, offset, out):
    """``fastnorm.random.normal`` into a device ``out`` (arguments checked by it)."""
    y, flat = _fill_target(out, shape, out.dtype)
    if flat.size:
        K.normal_apply[_grid(flat.size)](flat, flat, offset, *_key(seed), mean, std, 0)
    return y
