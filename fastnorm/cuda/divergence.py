"""Divergences, softmax and softmax cross-entropy on CUDA device arrays (the numba.cuda kernels
in kernels/cuda/divergence.py).

``fastnorm.functional.entropy``, ``softmax``, ``softmax_cross_entropy`` and friends come here
when their first argument is a device array (``fastnorm._dispatch.device_variant``): same
arguments and semantics, results as numba device arrays of the inputs' dtype (a reduced loss
is a 0-d device array). On the device the reduced axis must be the last one (classes on axis 1
of 1-D or 2-D logits for the cross-entropy) and arrays C-contiguous; a host ``q`` is copied
over. Cross-entropy labels (and class weights) may be host or device arrays: they are checked
(range, ignore_index) and counted for the mean on the host, so device ones are copied back
(N integers, C weights; the logits never leave the device).
"""
import math

import numpy as np
from numba import cuda

from .. import _validation as v
from .norm import _device, _out, _standin
from .._dispatch import no_device_kernel, on_device
from ..ops.divergence import CROSS, ENTROPY, JS, KL, _check_base
from ..kernels.cuda import divergence as K
from ..ops.loss import _sce_checks

_F64 = np.dtype(np.float64)


def _run(mode, p, q, axis, base, root=False):
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
            K.divergence_rows[m, K.THREADS](mode, p.reshape(m, n), q.reshape(m, n), out.reshape(m),
                                            factor, root)
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


def js_distance(p, q, *, axis=-1, base=None):
    return _run(JS, p, q, axis, base, root=True)


# ---------------------------------------------------------------- softmax


def _softmax(x, axis, out, log, op):
    x = _device(x, "x")
    shape = tuple(x.shape)
    if len(shape) == 0:
        raise ValueError("x must have at least one dimension, got a 0-d array")
    if v.normalize_axis(axis, len(shape)) != len(shape) - 1:
        raise no_device_kernel(op, "on a CUDA device only the last axis is supported")
    y = _out(out, shape, x.dtype)
    n = shape[-1]
    m = math.prod(shape[:-1])
    if m and n:
        K.softmax_rows[m, K.THREADS](x.reshape(m, n), y.reshape(m, n), log)
    return y


def softmax(x, *, axis=-1, out=None):
    """``fastnorm.functional.softmax`` on device arrays (the last axis)."""
    return _softmax(x, axis, out, False, "functional.softmax")


def log_softmax(x, *, axis=-1, out=None):
    """``fastnorm.functional.log_softmax`` on device arrays (the last axis)."""
    return _softmax(x, axis, out, True, "functional.log_softmax")


# ---------------------------------------------------------------- softmax cross-entropy


def _sce_device(logits, labels, weight, ignore_index, reduction, label_smoothing, op):
    """(x2 (m, C) device rows, device labels, device weight or a dummy, host checks' values)."""
    x = _device(logits, "logits")
    if len(x.shape) > 2:
        raise no_device_kernel(op, "on a CUDA device logits must be (N, C) or (C,)")
    lab = labels.copy_to_host() if on_device(labels) else labels
    w = weight.copy_to_host() if on_device(weight) else weight
    # the CPU path's checks and counts, on a zero-memory stand-in of the logits
    _, lab, w, wsum, denom, eps, ncls = _sce_checks(_standin(x), lab, w, ignore_index, reduction,
                                                    label_smoothing)
    x2 = x.reshape(1, ncls) if len(x.shape) == 1 else x
    wd = cuda.to_device(w) if w is not None else cuda.device_array(1, _F64)
    return x, x2, cuda.to_device(lab), wd, w is not None, wsum, denom, eps


def _sce_rows(x2, lab, wd, has_w, wsum, ignore_index, eps, gscale, dx2):
    m, n = x2.shape
    loss = cuda.device_array(m, _F64)
    if m and n:
        want = gscale is not None
        K.softmax_cross_entropy_rows[m, K.THREADS](
            x2, lab, wd, has_w, wsum, int(ignore_index), eps,
            gscale if want else cuda.device_array(1, _F64), want, loss,
            dx2 if want else cuda.device_array((1, 1), x2.dtype))
    elif m:
        loss = cuda.to_device(np.zeros(m))  # no classes: every label is ignore_index (checked)
    return loss


def _reduced(loss, x, reduction, denom):
    m = loss.shape[0]
    if reduction == "none":
        out = cuda.device_array(m, x.dtype)
        if m:
            K.cast[(m + K.THREADS - 1) // K.THREADS, K.THREADS](loss, out)
        return out.reshape(tuple(x.shape[:1]) if len(x.shape) == 2 else ())
    out = cuda.device_array(1, x.dtype)
    divisor = (denom if denom else math.nan) if reduction == "mean" else 1.0
    K.sum_to[1, K.THREADS](loss, divisor, out)
    return out.reshape(())


def _gscale(reduction, denom, m, shape, dloss):
    """The per-row upstream gradient, a device array (m,): ``dloss`` of labels' ``shape``
    ('none'), else one number (a device one is read back) spread over the rows."""
    if reduction == "none":
        return _device(dloss, "dloss", None, shape).reshape(m)
    g = float(dloss.copy_to_host() if on_device(dloss) else dloss)
    if reduction == "mean":
        g = g / denom if denom else math.nan
    return cuda.to_device(np.full(m, g))


def softmax_cross_entropy(logits, labels, *, weight=None, ignore_index=-100, reduction="mean",
                          label_smoothing=0.0, return_grad=False):
    """``fastnorm.functional.softmax_cross_entropy`` on device logits ((N, C) or (C,))."""
    x, x2, lab, wd, has_w, wsum, denom, eps = _sce_device(
        logits, labels, weight, ignore_index, reduction, label_smoothing,
        "functional.softmax_cross_entropy")
    if not return_grad:
        loss = _sce_rows(x2, lab, wd, has_w, wsum, ignore_index, eps, None, None)
        return _reduced(loss, x, reduction, denom)
    m = x2.shape[0]
    g = 1.0 / denom if reduction == "mean" and denom else (math.nan if reduction == "mean" else 1.0)
    dx = cuda.device_array(tuple(x.shape), x.dtype)
    loss = _sce_rows(x2, lab, wd, has_w, wsum, ignore_index, eps, cuda.to_device(np.full(m, g)),
                     dx.reshape(x2.shape))
    return _reduced(loss, x, reduction, denom), dx


def softmax_cross_entropy_backward(dloss, logits, labels, *, weight=None, ignore_index=-100,
                                   reduction="mean", label_smoothing=0.0, return_grad=False,
                                   out=None):
    """``fastnorm.functional.softmax_cross_entropy_backward`` on device logits. ``dloss``: a
    number or 0-d array (host or device) for 'mean'/'sum'; labels' shape for 'none'."""
    x, x2, lab, wd, has_w, wsum, denom, eps = _sce_device(
        logits, labels, weight, ignore_index, reduction, label_smoothing,
        "functional.softmax_cross_entropy_backward")
    m = x2.shape[0]
    if reduction != "none" and tuple(getattr(dloss, "shape", ())) != ():
        raise ValueError(f"dloss must be a scalar for reduction={reduction!r}, got shape {tuple(dloss.shape)}")
    gscale = _gscale(reduction, denom, m, tuple(x.shape[:1]) if len(x.shape) == 2 else (), dloss)
    dx = _out(out, tuple(x.shape), x.dtype)
    if m and x2.shape[1]:
        _sce_rows(x2, lab, wd, has_w, wsum, ignore_index, eps, gscale, dx.reshape(x2.shape))
    return dx
