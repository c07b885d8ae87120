"""Weight penalties, the L1 proximal step and gradient-norm clipping.

Lists of CUDA device arrays run on the device (fastnorm.cuda.dropout; norms come back as 0-d
float64 device arrays there). Norms are accumulated in float64 in a fixed order (chunks of 2^16 elements, 32 interleaved
lanes inside a chunk, chunk partials added in order, arrays in the order given): the same bits
on both CPU backends and any thread count. In-place updates are elementwise in the arrays'
own dtype.
"""
import math

import numpy as np

from .. import _validation as v
from .._dispatch import device_variant, kernels, threads_for

__all__ = ["l1_penalty", "l2_penalty", "l1_penalty_grad_", "l2_penalty_grad_", "l1_prox_",
           "grad_norm", "clip_grad_norm_"]

_REDUCE_CHUNK = 1 << 16  # kernels' REDUCE_CHUNK
_SUM_ABS, _SUM_SQ, _MAX_ABS, _SUM_POW = 0, 1, 2, 3


def _array_list(arrays, name):
    """A list of float arrays from one array, a sequence of arrays, or a dict's values."""
    if isinstance(arrays, dict):
        arrays = list(arrays.values())
    elif isinstance(arrays, np.ndarray) or not isinstance(arrays, (list, tuple)):
        arrays = [arrays]
    return [v.float_array(a, f"{name}[{i}]") for i, a in enumerate(arrays)]


def _reduce(a, kind, p=1.0):
    """float64 reduction ``kind`` of one array (fixed order, see the module docstring)."""
    flat = v.contiguous(a).reshape(-1)
    n = flat.size
    if not n:
        return 0.0
    partials = np.empty((n + _REDUCE_CHUNK - 1) // _REDUCE_CHUNK)
    kernels("dropout").reduce_partials(flat, partials, kind, float(p), threads_for(n))
    if kind == _MAX_ABS:
        return float(np.max(partials))  # NaN propagates
    total = 0.0
    for s in partials.tolist():
        total += s
    return total


@device_variant
def l1_penalty(arrays):
    """``sum_k sum_i |w_ki|`` over every array (one array, a list, or a dict's values), a float
    computed in float64. The L1 term of Obj = Loss + lambda * sum |w| (the seeds' notes);
    ``sum(p.abs().sum() for p in params)`` in torch.

    >>> import numpy as np, fastnorm.functional as fn
    >>> fn.l1_penalty([np.array([1.0, -2.0]), np.array([[-0.5]], np.float32)])
    3.5
    """
    return _sum(_array_list(arrays, "arrays"), _SUM_ABS)


@device_variant
def l2_penalty(arrays):
    """``sum_k sum_i w_ki^2`` (the squared L2 norm, no 1/2) over every array, float64.
    torch's ``weight_decay=lambda`` is the gradient of ``lambda / 2 * l2_penalty``.

    >>> import numpy as np, fastnorm.functional as fn
    >>> fn.l2_penalty({"w": np.array([3.0, 4.0])})
    25.0
    """
    return _sum(_array_list(arrays, "arrays"), _SUM_SQ)


def _sum(arrays, kind):
    total = 0.0
    for a in arrays:
        total += _reduce(a, kind)
    return total


def _pairs(params, grads):
    params = _array_list(params, "params")
    if isinstance(grads, dict):
        grads = list(grads.values())
    elif isinstance(grads, np.ndarray) or not isinstance(grads, (list, tuple)):
        grads = [grads]
    if len(grads) != len(params):
        raise ValueError(f"params and grads must have the same length, got {len(params)} and {len(grads)}")
    out = []
    for i, (p, g) in enumerate(zip(params, grads)):
        if type(g) is not np.ndarray:
            raise TypeError(f"grads[{i}] must be a numpy.ndarray (updated in place), got {type(g).__name__}")
        v.float_array(g, f"grads[{i}]")
        if g.shape != p.shape:
            raise ValueError(f"params[{i}] and grads[{i}] must have the same shape, got {p.shape} and {g.shape}")
        if not g.flags.writeable:
            raise ValueError(f"grads[{i}] is read-only")
        out.append((p, g))
    return out


def _coeff(coeff, name="coeff"):
    coeff = float(coeff)
    if not math.isfinite(coeff):
        raise ValueError(f"{name} must be finite, got {coeff}")
    return coeff


@device_variant(also=1)
def l1_penalty_grad_(params, grads, coeff=1.0):
    """Adds the gradient of ``coeff * l1_penalty(params)`` to ``grads`` in place:
    ``g += coeff * sign(w)`` (sign(0) = 0, the subgradient torch's ``abs`` backward uses).
    Returns ``grads``.

    >>> import numpy as np, fastnorm.functional as fn
    >>> g = np.zeros(3); _ = fn.l1_penalty_grad_([np.array([-2.0, 0.0, 5.0])], [g], 0.1); g
    array([-0.1,  0. ,  0.1])
    """
    coeff = _coeff(coeff)
    for p, g in _pairs(params, grads):
        g += (np.sign(p) * coeff).astype(g.dtype, copy=False)
    return grads


@device_variant(also=1)
def l2_penalty_grad_(params, grads, coeff=1.0):
    """Adds the gradient of ``coeff * l2_penalty(params)`` to ``grads`` in place:
    ``g += 2 coeff w``. (torch's ``weight_decay=wd`` adds ``wd * w``: coeff = wd / 2.)
    Returns ``grads``.

    >>> import numpy as np, fastnorm.functional as fn
    >>> g = np.ones(2); _ = fn.l2_penalty_grad_([np.array([1.0, -3.0])], [g], 0.5); g
    array([ 2., -2.])
    """
    coeff = _coeff(coeff)
    for p, g in _pairs(params, grads):
        g += (p * (2.0 * coeff)).astype(g.dtype, copy=False)
    return grads


@device_variant
def l1_prox_(params, threshold):
    """The L1 proximal step (soft thresholding), in place:
    ``w = sign(w) * max(|w| - threshold, 0)``, the prox of ``threshold * |w|`` (after a
    gradient step with learning rate lr on the loss, threshold = lr * lambda: ISTA).
    ``torch.nn.functional.softshrink(w, threshold)``. NaN stays NaN. Returns ``params``.

    >>> import numpy as np, fastnorm.functional as fn
    >>> w = np.array([-1.5, -0.2, 0.0, 0.3, 2.0]); _ = fn.l1_prox_([w], 0.5); w
    array([-1. , -0. ,  0. ,  0. ,  1.5])
    """
    threshold = _coeff(threshold, "threshold")
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")
    items = params if isinstance(params, (list, tuple, dict)) else [params]
    for i, w in enumerate(items.values() if isinstance(items, dict) else items):
        if type(w) is not np.ndarray:
            raise TypeError(f"params[{i}] must be a numpy.ndarray (updated in place), got {type(w).__name__}")
        v.float_array(w, f"params[{i}]")
        if not w.flags.writeable:
            raise ValueError(f"params[{i}] is read-only")
    for w in (items.values() if isinstance(items, dict) else items):
        t = w.dtype.type(threshold)
        shrunk = np.abs(w) - t
        np.maximum(shrunk, 0, out=shrunk)  # NaN propagates through maximum
        np.copysign(shrunk, w, out=w)
    return params


def _norm_type(norm_type):
    if isinstance(norm_type, str) and norm_type.lower() == "inf":
        return math.inf
    if isinstance(norm_type, bool) or not isinstance(norm_type, (int, float, np.integer, np.floating)):
        raise TypeError(f"norm_type must be a positive number or inf, got {norm_type!r}")
    norm_type = float(norm_type)
    if not norm_type > 0:
        raise ValueError(f"norm_type must be > 0 or inf, got {norm_type}")
    return norm_type


def _array_norm(a, p):
    if p == math.inf:
        return _reduce(a, _MAX_ABS)
    if p == 1.0:
        return _reduce(a, _SUM_ABS)
    if p == 2.0:
        return math.sqrt(_reduce(a, _SUM_SQ))
    return _reduce(a, _SUM_POW, p) ** (1.0 / p)


@device_variant
def grad_norm(grads, norm_type=2.0):
    """The total norm ``clip_grad_norm_`` uses: the ``norm_type`` norm of the per-array norms
    (equal to the norm of all elements concatenated), float64.

    >>> import numpy as np, fastnorm.functional as fn
    >>> fn.grad_norm([np.array([3.0]), np.array([4.0])])
    5.0
    """
    p = _norm_type(norm_type)
    norms = [_array_norm(g, p) for g in _array_list(grads, "grads")]
    if not norms:
        return 0.0
    if p == math.inf:
        return float(np.max(norms))
    return _array_norm(np.array(norms), p)


@device_variant
def clip_grad_norm_(grads, max_norm, norm_type=2.0, error_if_nonfinite=False, foreach=None):
    """Scale ``grads`` in place so that their total norm is at most ``max_norm``; returns the
    total norm before clipping (a float).

    ``torch.nn.utils.clip_grad_norm_`` semantics: total = the ``norm_type`` norm (1, 2, inf, or
    any p > 0) of the arrays' norms; every array is multiplied by
    ``min(max_norm / (total + 1e-6), 1)`` (always multiplied, as torch does). A non-finite
    total raises RuntimeError with ``error_if_nonfinite``; otherwise, as in torch, a NaN total
    turns every gradient to NaN and an infinite one multiplies them by 0. The norm is
    accumulated in float64 (torch: in the gradients' dtype), the scaling is in each array's
    dtype. ``foreach`` is accepted for torch's signature and ignored (one fused loop per array
    either way). An empty array's norm is 0 for every norm type (torch refuses the inf norm of one).

    >>> import numpy as np, fastnorm.functional as fn
    >>> g = [np.array([3.0, 4.0])]
    >>> fn.clip_grad_norm_(g, 1.0), g[0].round(6)
    (5.0, array([0.6, 0.8]))
    """
    arrays = grads if isinstance(grads, (list, tuple)) else (
        list(grads.values()) if isinstance(grads, dict) else [grads])
    for i, g in enumerate(arrays):
        if type(g) is not np.ndarray:
            raise TypeError(f"grads[{i}] must be a numpy.ndarray (scaled in place), got {type(g).__name__}")
        v.float_array(g, f"grads[{i}]")
        if not g.flags.writeable:
            raise ValueError(f"grads[{i}] is read-only")
    max_norm = float(max_norm)
    total = grad_norm(arrays, norm_type)
    if not arrays:
        return 0.0
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(
            f"The total norm of order {float(_norm_type(norm_type))} for gradients from "
            "`parameters` is non-finite, so it cannot be clipped. To disable this error and "
            "scale the gradients by the non-finite norm anyway, set "
            "`error_if_nonfinite=False`")
    coef = max_norm / (total + 1e-6) if total != math.inf else 0.0
    if math.isnan(total):
        coef = math.nan
    coef = min(coef, 1.0) if not math.isnan(coef) else coef
    with np.errstate(invalid="ignore"):  # inf * 0 after an infinite total: NaN, as in torch
        for g in arrays:
            np.multiply(g, g.dtype.type(coef), out=g)
    return total
