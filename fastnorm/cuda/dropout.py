"""Dropout and Gaussian dropout on CUDA device arrays (kernels in kernels/cuda/dropout.py).

``fastnorm.functional.dropout`` and friends come here when their first argument is a device
array (``fastnorm._dispatch.device_variant``): same arguments, same semantics, device arrays
back. The mask is the CPU backends' mask bit for bit (same Philox stream); Gaussian noise
equals the CPU's within a few ulps (CUDA's libdevice log/cos). Device arrays must be
C-contiguous.
"""
import math

import numpy as np
from numba import config, cuda

from .. import random as _random
from .norm import _device, _out
from ..ops.dropout import check_p, threshold
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


def _identity(x, name, out):
    x = _device(x, name)
    if out is None:
        return x
    y = _out(out, tuple(x.shape), x.dtype)
    y.copy_to_device(x)
    return y


def _apply(x, p, seed, out, name):
    x, y, xf, yf, n = _flat(x, name, out)
    if n:
        dt = np.dtype(x.dtype).type
        if p == 1.0:
            scale, thr = dt(0), np.uint64(1 << 32)  # no 32-bit word reaches 2^32: all dropped
        else:
            scale, thr = dt(1.0 / (1.0 - p)), np.uint64(threshold(p))
        K.dropout_apply[_grid((((n - 1) >> 8) + 1) << 6)](xf, yf, *_key(seed), thr, scale)
    return y


def dropout(x, p=0.5, *, training=True, seed=None, out=None, return_seed=False):
    """``fastnorm.functional.dropout`` on device arrays."""
    p = check_p(p)
    if not training or p == 0.0:
        y = _identity(x, "x", out)
        return (y, None if seed is None else _random.check_seed(seed)) if return_seed else y
    seed = _random.check_seed(seed)
    y = _apply(x, p, seed, out, "x")
    return (y, seed) if return_seed else y


def dropout_backward(dy, p, seed, *, training=True, out=None):
    """``fastnorm.functional.dropout_backward`` on device arrays."""
    p = check_p(p)
    if seed is None:
        raise TypeError("dropout_backward needs the forward's seed (an int), got None")
    seed = _random.check_seed(seed)
    if not training or p == 0.0:
        return _identity(dy, "dy", out)
    return _apply(dy, p, seed, out, "dy")


def dropout_mask(shape, p, seed):
    """``fastnorm.functional.dropout_mask`` as a device bool array."""
    p = check_p(p)
    seed = _random.check_seed(seed)
    shape = _random._shape(shape)
    n = math.prod(shape)
    mask = cuda.device_array(n, np.bool_)
    if n:
        thr = np.uint64(1 << 32) if p == 1.0 else np.uint64(threshold(p))
        K.dropout_mask[_grid((((n - 1) >> 8) + 1) << 6)](mask, *_key(seed), thr)
    return mask.reshape(shape)


def _gaussian(x, p, seed, out, name):
    x, y, xf, yf, n = _flat(x, name, out)
    if n:
        K.normal_apply[_grid(n)](xf, yf, *_key(seed), 1.0, math.sqrt(p / (1.0 - p)), 1)
    return y


def gaussian_dropout(x, p=0.5, *, training=True, seed=None, out=None, return_seed=False):
    """``fastnorm.functional.gaussian_dropout`` on device arrays."""
    p = check_p(p, allow_one=False)
    if not training or p == 0.0:
        y = _identity(x, "x", out)
        return (y, None if seed is None else _random.check_seed(seed)) if return_seed else y
    seed = _random.check_seed(seed)
    y = _gaussian(x, p, seed, out, "x")
    return (y, seed) if return_seed else y


def gaussian_dropout_backward(dy, p, seed, *, training=True, out=None):
    """``fastnorm.functional.gaussian_dropout_backward`` on device arrays."""
    p = check_p(p, allow_one=False)
    if seed is None:
        raise TypeError("gaussian_dropout_backward needs the forward's seed (an int), got None")
    seed = _random.check_seed(seed)
    if not training or p == 0.0:
        return _identity(dy, "dy", out)
    return _gaussian(dy, p, seed, out, "dy")
