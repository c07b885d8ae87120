"""Row normalizations: LayerNorm and RMSNorm, forward and backward.

Both normalize each row of ``x`` viewed as (prod(shape[:axis]), prod(shape[axis:])); RMSNorm
is LayerNorm without centering and without bias. Statistics are float64 whatever the input
dtype (see ``layer_norm``), so a float32 output stays within 1e-5 of a float64 reference even
when |mean| is 1e6 times the standard deviation.
"""
import math

import numpy as np

from .. import _validation as v
from .._dispatch import PARALLEL_MIN_WORK, device_variant, kernels, threads_for

__all__ = ["layer_norm", "layer_norm_backward", "rms_norm", "rms_norm_backward"]

_F64 = np.dtype(np.float64)
_NONE = {dt: np.empty(0, dt) for dt in v.FLOAT_DTYPES}  # stands in for an absent weight/bias


def _rows(x, axis):
    """x checked, and its rows: (x, x2, axis, m, n), x2 the C-contiguous (m, n) view (or
    copy) of x, n = prod(shape[axis:])."""
    x = v.float_array(x, "x")
    ndim = x.ndim
    if ndim == 0:
        raise ValueError("x must have at least one dimension, got a 0-d array")
    if type(axis) is int and (axis == -1 or axis == ndim - 1):
        axis = ndim - 1
        n = x.shape[-1]
    else:
        axis = v.normalize_axis(axis, ndim)
        n = math.prod(x.shape[axis:])
    m = x.size // n if n else math.prod(x.shape[:axis])
    x2 = x if ndim == 2 and axis == 1 and x.flags.c_contiguous else v.contiguous(x).reshape(m, n)
    return x, x2, axis, m, n


def _params_and_out(weight, bias, eps, out, x, axis, *inputs):
    """The checks every row op shares: (weight, bias, eps, out, target) with weight/bias of
    shape x.shape[axis:] and x's dtype (or None), and the array the kernel writes for out
    (see _validation.kernel_target; ``inputs`` are what it must not overlap)."""
    dt, shape = x.dtype, x.shape
    w = v.param_array(weight, "weight", shape[axis:], dt)
    b = v.param_array(bias, "bias", shape[axis:], dt)
    eps = v.check_eps(eps)
    out, target = v.out_target(out, shape, dt, x, w, b, *inputs)
    return w, b, eps, out, target


def _forward(x, weight, bias, axis, eps, out, center):
    """(y, mean, rstd); mean/rstd float64 of shape x.shape[:axis]."""
    if axis == -1:
        small = kernels("norm").norm_forward_small  # per-call latency: see kernels/cython
        if small is not None:
            r = small(x, weight, bias, out, eps, center, PARALLEL_MIN_WORK)
            if r is not None:
                return r
    x, x2, axis, m, n = _rows(x, axis)
    dt, shape = x.dtype, x.shape
    w, b, eps, out, target = _params_and_out(weight, bias, eps, out, x, axis)
    mean = np.empty(shape[:axis], _F64)
    rstd = np.empty(shape[:axis], _F64)
    if not x2.size:
        mean.fill(np.nan)  # statistics of empty rows are undefined
        rstd.fill(np.nan)
        return out, mean, rstd
    if b is not None and w is None:
        w = np.ones(shape[axis:], dt)
    kernels("norm").norm_forward(
        x2, _NONE[dt] if w is None else w.reshape(n), _NONE[dt] if b is None else b.reshape(n),
        target if target.ndim == 2 and axis == 1 else target.reshape(m, n),
        mean if axis == 1 else mean.reshape(m), rstd if axis == 1 else rstd.reshape(m),
        center, w is not None, b is not None, eps, threads_for(x2.size))
    return (out if target is out else v.finish(out, target)), mean, rstd


def _stats_array(s, name, shape, m):
    s = v.float_array(s, name)
    if s.shape != shape:
        raise ValueError(f"{name} must have shape {shape} (the forward's statistics), got {s.shape}")
    return v.contiguous(s.astype(_F64, copy=False)).reshape(m)


def _backward(dy, x, weight, bias, axis, eps, out, stats, center):
    x, x2, axis, m, n = _rows(x, axis)
    dt, shape = x.dtype, x.shape
    dy = v.grad_like(dy, x)
    w, b, eps, out, target = _params_and_out(weight, bias, eps, out, x, axis, dy)
    if stats is None:  # the forward's statistics, recomputed (no y written)
        mean = np.empty(m, _F64)
        rstd = np.empty(m, _F64)
        if x2.size:
            kernels("norm").norm_stats(x2, mean, rstd, center, eps, threads_for(x2.size))
    elif center:
        if not isinstance(stats, (tuple, list)) or len(stats) != 2:
            raise ValueError("stats must be the (mean, invstd) pair returned with return_stats=True")
        mean = _stats_array(stats[0], "stats[0] (mean)", shape[:axis], m)
        rstd = _stats_array(stats[1], "stats[1] (invstd)", shape[:axis], m)
    else:
        if isinstance(stats, (tuple, list)):
            if len(stats) != 1:
                raise ValueError("stats must be the invrms array returned with return_stats=True")
            stats = stats[0]
        rstd = _stats_array(stats, "stats (invrms)", shape[:axis], m)
        mean = np.zeros(m, _F64)  # RMSNorm does not center
    dw = np.zeros(n if w is not None else 0, _F64)
    db = np.zeros(n if b is not None else 0, _F64)
    if x2.size:
        kernels("norm").norm_backward(
            v.contiguous(dy).reshape(m, n), x2, _NONE[dt] if w is None else w.reshape(n),
            target.reshape(m, n), dw, db, mean, rstd, center, w is not None,
            w is not None, b is not None, threads_for(x2.size))
    dx = v.finish(out, target)
    dweight = None if w is None else dw.astype(dt).reshape(shape[axis:])
    dbias = None if b is None else db.astype(dt).reshape(shape[axis:])
    return dx, dweight, dbias


@device_variant
def layer_norm(x, weight=None, bias=None, *, axis=-1, eps=1e-5, out=None, return_stats=False):
    """Layer normalization over the trailing dimensions ``x.shape[axis:]``.

    Each row r of x viewed as (prod(shape[:axis]), prod(shape[axis:])) becomes::

        mean_r = sum_i x_ri / n,   var_r = sum_i (x_ri - mean_r)^2 / n   (biased)
        y_ri   = (x_ri - mean_r) / sqrt(var_r + eps) * weight_i + bias_i

    ONNX LayerNormalization's ``axis``; ``torch.nn.functional.layer_norm(x, x.shape[axis:],
    weight, bias, eps)``. Statistics are accumulated in float64 (32 interleaved partial sums in
    a fixed order; float32 rows in one pass of sums of x - x[0] and their squares, exact in
    float64, float64 rows in two), so results are bitwise identical for any thread count and
    both CPU backends.

    Parameters
    ----------
    x : array of float32 or float64, any layout (C-contiguous is fastest).
    weight, bias : arrays of shape ``x.shape[axis:]`` or None.
    axis : first normalized dimension.
    eps : added to the variance.
    out : array of x's shape and dtype to receive y; may be ``x`` itself (in place).
    return_stats : also return ``mean`` and ``invstd = 1/sqrt(var + eps)``, shape
        ``x.shape[:axis]``. They are float64 for either input dtype (a deliberate difference
        from torch, which returns them in the input's dtype): handed back to
        ``layer_norm_backward(..., stats=(mean, invstd))`` they give the same bits as
        recomputing them.

    Returns
    -------
    y, or (y, mean, invstd) with return_stats.

    Examples
    --------
    >>> import numpy as np, fastnorm.functional as fn
    >>> x = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
    >>> fn.layer_norm(x).round(4)
    array([[-1.3416, -0.4472,  0.4472,  1.3416]], dtype=float32)
    """
    y, mean, rstd = _forward(x, weight, bias, axis, eps, out, True)
    return (y, mean, rstd) if return_stats else y


@device_variant
def layer_norm_backward(dy, x, weight=None, bias=None, *, axis=-1, eps=1e-5, out=None,
                        return_stats=False, stats=None):
    """Gradients of ``layer_norm``: returns ``(dx, dweight, dbias)``.

    With xhat = (x - mean) * invstd and g = dy * weight, per row (n elements)::

        dx      = invstd * (g - mean(g) - xhat * mean(g * xhat))
        dweight = sum over rows of dy * xhat,   dbias = sum over rows of dy

    ``dweight``/``dbias`` are None where weight/bias is None. ``stats=(mean, invstd)`` from
    the forward's ``return_stats=True`` skips recomputing them (same bits either way). ``out``
    receives dx (may be ``dy``). ``return_stats`` is accepted, and ignored, so the forward's
    keywords can be passed unchanged. Column sums are taken over fixed row chunks in a fixed
    order: bitwise identical for any thread count and both CPU backends.

    Examples
    --------
    >>> import numpy as np, fastnorm.functional as fn
    >>> x = np.array([[1.0, 2.0, 4.0]]); w = np.ones(3); b = np.zeros(3)
    >>> dx, dw, db = fn.layer_norm_backward(np.ones_like(x), x, w, b)
    >>> bool(np.abs(dx).max() < 1e-12), db
    (True, array([1., 1., 1.]))
    """
    return _backward(dy, x, weight, bias, axis, eps, out, stats, True)


@device_variant
def rms_norm(x, weight=None, *, axis=-1, eps=1e-6, out=None, return_stats=False):
    """RMS normalization over the trailing dimensions ``x.shape[axis:]``::

        invrms_r = 1 / sqrt(sum_i x_ri^2 / n + eps),   y_ri = x_ri * invrms_r * weight_i

    ``torch.nn.functional.rms_norm(x, x.shape[axis:], weight, eps)`` (note: torch's default
    eps is the dtype's machine epsilon; ours is 1e-6 as in the API contract). Accumulated in
    float64 in a fixed order like ``layer_norm``.

    Returns y, or ``(y, invrms)`` with return_stats (invrms float64, shape ``x.shape[:axis]``).

    Examples
    --------
    >>> import numpy as np, fastnorm.functional as fn
    >>> fn.rms_norm(np.array([[3.0, 4.0]]), eps=0.0)
    array([[0.84852814, 1.13137085]])
    """
    y, _, rstd = _forward(x, weight, None, axis, eps, out, False)
    return (y, rstd) if return_stats else y


@device_variant
def rms_norm_backward(dy, x, weight=None, *, axis=-1, eps=1e-6, out=None, return_stats=False,
                      stats=None):
    """Gradients of ``rms_norm``: returns ``(dx, dweight)``.

    With xhat = x * invrms and g = dy * weight, per row (n elements)::

        dx = invrms * (g - xhat * mean(g * xhat)),   dweight = sum over rows of dy * xhat

    ``stats`` is the invrms array from ``return_stats=True``; ``out`` receives dx.

    Examples
    --------
    >>> import numpy as np, fastnorm.functional as fn
    >>> dx, dw = fn.rms_norm_backward(np.ones((1, 2)), np.array([[3.0, 4.0]]), np.ones(2), eps=0.0)
    >>> dx.round(4), dw.round(4)
    (array([[ 0.0453, -0.0339]]), array([0.8485, 1.1314]))
    """
    dx, dweight, _ = _backward(dy, x, weight, None, axis, eps, out, stats, False)
    return dx, dweight
