"""Divergences on CUDA device arrays (the numba.cuda kernels in kernels/cuda/divergence.py).

``fastnorm.functional.entropy`` and friends come here when their first argument is a device
array (``fastnorm._dispatch.device_variant``): same arguments and semantics, the result a numba
device array of the inputs' dtype. On the device the reduced axis must be the last one and
arrays C-contiguous; a host ``q`` is copied over.
"""
import math

import numpy as np
from numba import cuda

from .. import _validation as v
from .norm import _device
from ..ops.divergence import CROSS, ENTROPY, JS, KL, _check_base
from ..kernels.cuda import divergence as K


def _run(mode, p, q, axis, base):
    base = _check_base(base)
    p = _device(p, "p")
    shape, dt = tuple(p.shape), p.dtype
    if len(shape) == 0:
        raise ValueError("p must have at least one dimension, got a 0-d array")
    if v.normalize_axis(axis, len(shape)) != len(shape) - 1:
        raise ValueError("on a CUDA device, the reduced axis must be the last one")
    q = p if q is None else _device(q, "q", dt)
    if tuple(q.shape) != shape:
        raise ValueError(f"p and q must have the same shape on a CUDA device, got {shape} and {tuple(q.shape)}")
    n = shape[-1]
    m = math.prod(shape[:-1])
    out = cuda.device_array(shape[:-1], dt)
    if m:
        factor = (0.5 if mode == JS else 1.0) / (math.log(base) if base is not None else 1.0)
        if n:
            K.divergence_rows[m, K.THREADS](mode, p.reshape(m, n), q.reshape(m, n), out.reshape(m), factor)
        else:
            out = cuda.to_device(np.zeros(shape[:-1], dt))
    return out


def entropy(p, q=None, *, axis=-1, base=None):
    return _run(ENTROPY if q is None else KL, p, q, axis, base)


def kl_div(p, q, *, axis=-1, base=None):
    return _run(KL, p, q, axis, base)


def cross_entropy(p, q, *, axis=-1, base=None):
    return _run(CROSS, p, q, axis, base)


def js_div(p, q, *, axis=-1, base=None):
    return _run(JS, p, q, axis, base)
