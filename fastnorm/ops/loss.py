"""Softmax, log-softmax and softmax cross-entropy (forward, backward, and both fused).

Row kernels in kernels/*/divergence: a row's maximum, then exp(x - max) summed in float64 over
32 fixed lanes with our own exp/log, so the results are bitwise identical for any thread
count and both CPU backends, and stable for logits in the thousands (log-sum-exp).
"""
import numpy as np

from .. import _validation as v
from .._dispatch import device_variant, kernels, threads_for
from .divergence import _rows

__all__ = ["softmax", "log_softmax", "softmax_cross_entropy", "softmax_cross_entropy_backward"]

_F64 = np.dtype(np.float64)
_REDUCTIONS = ("none", "mean", "sum")


def _softmax(x, axis, out, log):
    x = v.float_array(x, "x")
    if x.ndim == 0:
        raise ValueError("x must have at least one dimension, got a 0-d array")
    axis = v.normalize_axis(axis, x.ndim)
    out = v.out_array(out, x.shape, x.dtype)
    if x.size == 0:
        return out
    last = axis == x.ndim - 1
    x2 = _rows(x, axis)
    if last:
        target = v.kernel_target(out, x)
        y2 = target.reshape(x2.shape)
    else:
        target = None
        y2 = np.empty(x2.shape, x.dtype)
    kernels("divergence").softmax_rows(x2, y2, log, threads_for(x2.size))
    if last:
        return v.finish(out, target)
    out[...] = np.moveaxis(y2.reshape(np.moveaxis(x, axis, -1).shape), -1, axis)
    return out


@device_variant
def softmax(x, *, axis=-1, out=None):
    """exp(x - max) / sum(exp(x - max)) along ``axis``: ``torch.softmax(x, dim=axis)``,
    ``scipy.special.softmax(x, axis)``. The sum is float64; the result has x's dtype.
    ``out`` (x's shape and dtype) receives it and may be x itself.

    Examples
    --------
    >>> import numpy as np, fastnorm.functional as fn
    >>> fn.softmax(np.array([1000.0, 1000.0, 0.0])).round(6)
    array([0.5, 0.5, 0. ])
    """
    return _softmax(x, axis, out, False)


@device_variant
def log_softmax(x, *, axis=-1, out=None):
    """x - max - log(sum(exp(x - max))) along ``axis``: ``torch.log_softmax(x, dim=axis)``,
    ``scipy.special.log_softmax(x, axis)``; finite for logits in the thousands.

    Examples
    --------
    >>> import numpy as np, fastnorm.functional as fn
    >>> fn.log_softmax(np.array([1000.0, 1000.0])).round(6)
    array([-0.693147, -0.693147])
    """
    return _softmax(x, axis, out, True)


def _sce_inputs(logits, labels, weight, ignore_index, reduction, label_smoothing):
    """(x2 (m, C) logits rows, labels (m,) int64, w float64 or None, wsum, eps, shape info)."""
    x, lab, w, wsum, denom, eps, ncls = _sce_checks(logits, labels, weight, ignore_index,
                                                    reduction, label_smoothing)
    x2 = _rows(x, 1) if x.ndim > 1 else _rows(x.reshape(1, -1), 1)
    return x, x2, lab, w, wsum, denom, eps, ncls


def _sce_checks(logits, labels, weight, ignore_index, reduction, label_smoothing):
    """_sce_inputs without the logits' rows (the CUDA path checks a stand-in of the logits)."""
    x = v.float_array(logits, "logits")
    if x.ndim == 0:
        raise ValueError("logits must have at least one dimension (classes), got a 0-d array")
    lab = np.asarray(labels)
    if lab.dtype.kind not in "iu":
        raise TypeError(f"labels must be an integer array of class indices, got dtype {lab.dtype}"
                        " (class-probability targets are not supported)")
    batch_shape = x.shape[:1] + x.shape[2:] if x.ndim > 1 else ()
    if lab.shape != batch_shape:
        raise ValueError(f"labels must have shape {batch_shape} for logits of shape {x.shape} "
                         f"(classes on axis 1), got {lab.shape}")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    eps = float(label_smoothing)
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {eps}")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
        raise TypeError(f"ignore_index must be an int, got {type(ignore_index).__name__}")
    ncls = x.shape[1] if x.ndim > 1 else x.shape[0]
    lab = lab.astype(np.int64).reshape(-1)
    bad = (lab != ignore_index) & ((lab < 0) | (lab >= ncls))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"labels must be class indices in [0, {ncls}) or ignore_index={ignore_index}, "
                         f"got {lab[i]} at flat position {i}")
    w = None
    if weight is not None:
        w = v.float_array(weight, "weight")
        if w.shape != (ncls,):
            raise ValueError(f"weight must have shape ({ncls},) (one per class), got {w.shape}")
        w = v.contiguous(w.astype(x.dtype).astype(_F64))
    valid = lab != ignore_index
    if w is None:
        wsum, denom = float(ncls), float(np.count_nonzero(valid))
    else:
        wsum, denom = float(np.sum(w)), float(np.sum(w[lab[valid]]))
    return x, lab, w, wsum, denom, eps, ncls


_NO_WEIGHT = np.empty(0, _F64)


def _sce_run(x2, lab, w, wsum, ignore_index, eps, gscale, dx2):
    m = x2.shape[0]
    loss = np.empty(m, _F64)
    if m and x2.shape[1]:
        want = gscale is not None
        kernels("divergence").softmax_cross_entropy_rows(
            x2, lab, _NO_WEIGHT if w is None else w, w is not None, wsum, int(ignore_index), eps,
            gscale if want else _NO_WEIGHT, want, loss, dx2 if want else np.empty((1, 0), x2.dtype),
            threads_for(x2.size))
    else:
        loss.fill(0.0)  # no classes: every label is ignore_index (checked)
    return loss


def _reduce(loss, lab_shape, reduction, denom, dt):
    if reduction == "none":
        return loss.astype(dt).reshape(lab_shape)
    total = np.sum(loss)
    if reduction == "mean":
        total = total / denom if denom else np.float64(np.nan)  # all ignored: NaN, as torch
    return dt.type(total)


def _dx_layout(x, dx2, out):
    """dx from the (m, C) rows back to logits' layout (classes on axis 1), into ``out``."""
    if x.ndim <= 2:
        dx = dx2.reshape(x.shape)
    else:
        moved = np.moveaxis(x, 1, -1).shape
        dx = np.moveaxis(dx2.reshape(moved), -1, 1)
    if out is None:
        return np.ascontiguousarray(dx) if x.ndim > 2 else dx
    out[...] = dx
    return out


@device_variant
def softmax_cross_entropy(logits, labels, *, weight=None, ignore_index=-100, reduction="mean",
                          label_smoothing=0.0, return_grad=False):
    """Cross-entropy of softmax(logits) against class labels, classes on axis 1:
    ``torch.nn.functional.cross_entropy(logits, labels, weight, ignore_index=...,
    reduction=..., label_smoothing=...)``.

    Per sample r (logits row x over C classes, label y, lse = log sum_c exp x_c)::

        loss_r = (1 - eps) w_y (lse - x_y) + eps / C * sum_c w_c (lse - x_c)

    (w = 1 without ``weight``; eps = ``label_smoothing``); 0 where y == ``ignore_index``.
    ``reduction='mean'`` divides the sum by the sum of w_y over the non-ignored samples, as
    torch does (NaN when every sample is ignored); ``'sum'`` sums; ``'none'`` returns the
    per-sample losses, shape of ``labels``. logits: (N, C), (N, C, d1, ...) or (C,) with
    labels (N,), (N, d1, ...) or (); labels outside [0, C) other than ``ignore_index`` raise
    ValueError. Stable for logits in the thousands (the row maximum is subtracted).

    ``return_grad=True`` returns ``(loss, dlogits)``, the gradient of the loss (upstream
    gradient 1) from the same pass: one exp per element for forward and backward together.

    Examples
    --------
    >>> import numpy as np, fastnorm.functional as fn
    >>> x = np.array([[2000.0, 0.0], [0.0, 0.0]]); y = np.array([0, 1])
    >>> round(float(fn.softmax_cross_entropy(x, y)), 6)
    0.346574
    """
    x, x2, lab, w, wsum, denom, eps, _ = _sce_inputs(logits, labels, weight, ignore_index,
                                                     reduction, label_smoothing)
    lab_shape = x.shape[:1] + x.shape[2:] if x.ndim > 1 else ()
    if not return_grad:
        loss = _sce_run(x2, lab, w, wsum, ignore_index, eps, None, None)
        return _reduce(loss, lab_shape, reduction, denom, x.dtype)
    m = x2.shape[0]
    g = 1.0 / denom if reduction == "mean" and denom else (np.nan if reduction == "mean" else 1.0)
    gscale = np.full(m, g, _F64)
    dx2 = np.empty(x2.shape, x.dtype)
    loss = _sce_run(x2, lab, w, wsum, ignore_index, eps, gscale, dx2)
    return _reduce(loss, lab_shape, reduction, denom, x.dtype), _dx_layout(x, dx2, None)


@device_variant(also=1)
def softmax_cross_entropy_backward(dloss, logits, labels, *, weight=None, ignore_index=-100,
                                   reduction="mean", label_smoothing=0.0, return_grad=False,
                                   out=None):
    """Gradient of ``softmax_cross_entropy`` with respect to the logits::

        dlogits_rc = g_r * ((1 - eps) w_y (p_c - [c == y]) + eps / C * (W p_c - w_c))

    with p = softmax(x_r), W = sum_c w_c, and g_r the upstream gradient: ``dloss[r]`` for
    reduction 'none' (shape of labels), ``dloss`` for 'sum', ``dloss / sum(w_y)`` for 'mean';
    0 for ignored samples. Torch's autograd of ``F.cross_entropy``. One pass per row (the
    exponentials are kept for the row). ``out`` (logits' shape and dtype) receives it.
    ``return_grad`` is accepted and ignored so the forward's keywords pass unchanged.

    Examples
    --------
    >>> import numpy as np, fastnorm.functional as fn
    >>> fn.softmax_cross_entropy_backward(1.0, np.array([[0.0, 0.0]]), np.array([1]))
    array([[ 0.5, -0.5]])
    """
    x, x2, lab, w, wsum, denom, eps, _ = _sce_inputs(logits, labels, weight, ignore_index,
                                                     reduction, label_smoothing)
    lab_shape = x.shape[:1] + x.shape[2:] if x.ndim > 1 else ()
    dl = v.float_array(dloss, "dloss")
    m = x2.shape[0]
    if reduction == "none":
        if dl.shape != lab_shape:
            raise ValueError(f"dloss must have the shape of labels {lab_shape} for reduction='none', "
                             f"got {dl.shape}")
        gscale = v.contiguous(dl.astype(_F64).reshape(m))
    else:
        if dl.shape != ():
            raise ValueError(f"dloss must be a scalar for reduction={reduction!r}, got shape {dl.shape}")
        g = float(dl)
        if reduction == "mean":
            g = g / denom if denom else np.nan
        gscale = np.full(m, g, _F64)
    if out is not None:
        out = v.out_array(out, x.shape, x.dtype)
        if x.ndim <= 2:  # rows are logits' own layout: the kernel may write out directly
            target = v.kernel_target(out, x)
            _sce_run(x2, lab, w, wsum, ignore_index, eps, gscale, target.reshape(x2.shape))
            return v.finish(out, target)
    dx2 = np.empty(x2.shape, x.dtype)
    _sce_run(x2, lab, w, wsum, ignore_index, eps, gscale, dx2)
    return _dx_layout(x, dx2, out)
