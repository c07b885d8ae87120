"""Local and parameter normalizations: local response normalization (LRN), Lp normalization,
weight normalization and cosine normalization, forward and backward.

LRN walks the channel axis with a sliding window that costs O(1) per element whatever the
window size (van Herk / Gil-Werman prefix and suffix sums, see kernels/numba/local.py); the
others reduce a p-norm over one axis in float64, in a fixed order. All results are bitwise
identical for any thread count and both CPU backends.
"""
import math

import numpy as np

from .. import _validation as val
from .._dispatch import device_variant, kernels, threads_for

__all__ = ["local_response_norm", "local_response_norm_backward", "lp_normalize",
           "lp_normalize_backward", "weight_norm", "weight_norm_backward", "cosine_linear",
           "cosine_linear_backward"]

_F64 = np.dtype(np.float64)
_EMPTY64 = np.empty(0, _F64)
_EMPTY64_2D = np.empty((0, 0), _F64)


def _number(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if math.isnan(value):
        raise ValueError(f"{name} must not be NaN")
    return value


# ---------------------------------------------------------------- local response normalization


def _lrn_args(x, size, alpha, beta, k):
    x = val.float_array(x, "x")
    if x.ndim < 3:
        raise ValueError(f"x must have at least 3 dimensions (N, C, *), got shape {x.shape}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise TypeError(f"size must be an int, got {type(size).__name__}")
    if size < 1:
        raise ValueError(f"size must be at least 1, got {size}")
    size = int(size)
    alpha, beta, k = _number(alpha, "alpha"), _number(beta, "beta"), _number(k, "k")
    mode = {0.75: 1, 0.5: 2, 1.0: 3}.get(beta, 0)
    return x, size, alpha, beta, k, mode


def _as3(a, shape3):
    return val.contiguous(a).reshape(shape3)


@device_variant
def local_response_norm(x, size, *, alpha=1e-4, beta=0.75, k=1.0, out=None):
    """Local response normalization across channels (axis 1 of x of shape (N, C, *))::

        y[n, c] = x[n, c] / (k + alpha / size * sum_{j = c - size//2}^{c + (size-1)//2} x[n, j]^2)^beta

    with x[n, j] = 0 outside [0, C): ``torch.nn.functional.local_response_norm(x, size, alpha,
    beta, k)`` (the window sum divided by ``size``, even sizes too: torch pads size//2 channels
    before and (size-1)//2 after). ONNX LRN has the same formula but pads (size-1)//2 before and
    size//2 after: the two agree for odd sizes only. AlexNet used size 5, alpha 1e-4,
    beta 0.75, k 2.

    The window sums are float64 and take O(1) per element whatever ``size`` (a sliding window
    of prefix and suffix sums, no subtraction: an inf or NaN stays in the windows that hold
    it). The power is computed from square roots for beta 0.75 (the default), 0.5 and 1, in
    the input's dtype, and with ``pow`` in float64 for any other beta.

    Parameters
    ----------
    x : float32/float64 array of 3 or more dimensions, any layout.
    size : channels in the window (a positive int).
    alpha, beta, k : the formula's constants.
    out : array of x's shape and dtype for y; may be x.

    Examples
    --------
    >>> import numpy as np, fastnorm.functional as fn
    >>> x = np.ones((1, 3, 1), np.float32)
    >>> fn.local_response_norm(x, 2, alpha=1.0, beta=1.0, k=1.0).ravel()
    array([0.6666667, 0.5      , 0.5      ], dtype=float32)
    """
    x, size, alpha, beta, k, mode = _lrn_args(x, size, alpha, beta, k)
    out, target = val.out_target(out, x.shape, x.dtype, x)
    if np.may_share_memory(target, x):
        target = np.empty(x.shape, x.dtype)  # the window reads channels already written
    if x.size:
        shape3 = (x.shape[0], x.shape[1], x.size // (x.shape[0] * x.shape[1]))
        kernels("local").lrn_forward(_as3(x, shape3), target.reshape(shape3), size, size // 2,
                                     alpha / size, k, beta, mode, x.dtype.type(1),
                                     threads_for(x.size))
    return val.finish(out, target)


@device_variant
def local_response_norm_backward(dy, x, size, *, alpha=1e-4, beta=0.75, k=1.0, out=None):
    """Gradient of ``local_response_norm`` with respect to x (returns dx alone).

    With D_c = k + alpha / size * S_c (S_c the window sum of squares of channel c) and
    y_c = x_c * D_c^-beta::

        dx_i = dy_i * D_i^-beta - (2 * alpha * beta / size) * x_i * sum_{c: i in window(c)} dy_c * y_c / D_c

    The sum over the channels whose window holds i is again a sliding window (the mirrored
    one), taken with the same O(1) scheme. Computed in float64 whatever the input dtype.
    ``out`` receives dx (may be dy).

    Examples
    --------
    >>> import numpy as np, fastnorm.functional as fn
    >>> x = np.ones((1, 2, 1)); dy = np.ones_like(x)
    >>> fn.local_response_norm_backward(dy, x, 1, alpha=1.0, beta=1.0, k=1.0).ravel()
    array([0., 0.])
    """
    x, size, alpha, beta, k, mode = _lrn_args(x, size, alpha, beta, k)
    dy = val.grad_like(dy, x)
    out, target = val.out_target(out, x.shape, x.dtype, x, dy)
    if x.size:
        shape3 = (x.shape[0], x.shape[1], x.size // (x.shape[0] * x.shape[1]))
        kernels("local").lrn_backward(_as3(dy, shape3), _as3(x, shape3), target.reshape(shape3),
                                      size, size // 2, alpha / size, k, beta, mode,
                                      threads_for(2 * x.size))
    return val.finish(out, target)


# ---------------------------------------------------------------- p-norms over one axis


def _p_mode(p):
    p = _number(p, "p")
    if not p > 0:
        raise ValueError(f"p must be positive (or inf), got {p}")
    return p, {2.0: 2, 1.0: 1, math.inf: 3}.get(p, 0)


def _pnorm_run(x, shape3, g, target, p, mode, eps, write_y, dy=None):
    """Runs the Lp kernel on x viewed as (outer, n, inner), reducing over n; g (float64 of
    shape (outer, inner), or None) scales each group. Returns (norms, dots) of shape
    (outer, inner), dots None for the forward."""
    outer, n, inner = shape3
    norms = np.empty((outer, inner), _F64)
    dots = np.empty((outer, inner), _F64) if dy is not None else None
    if outer * inner == 0:
        return norms, dots
    K = kernels("local")
    x3 = _as3(x, shape3)
    nthreads = threads_for(x.size * (2 if dy is not None else 1))
    if inner == 1:
        x2 = x3.reshape(outer, n)
        g1 = _EMPTY64 if g is None else g.reshape(outer)
        if dy is None:
            y2 = target.reshape(outer, n) if write_y else x2
            K.lp_rows(x2, g1, y2, norms.reshape(outer), p, mode, eps, g is not None, write_y, nthreads)
        else:
            K.lp_rows_backward(_as3(dy, shape3).reshape(outer, n), x2, g1, target.reshape(outer, n),
                               norms.reshape(outer), dots.reshape(outer), p, mode, eps,
                               g is not None, nthreads)
    else:
        g2 = _EMPTY64_2D if g is None else g.reshape(outer, inner)
        if dy is None:
            y3 = target.reshape(shape3) if write_y else x3
            K.lp_cols(x3, g2, y3, norms, p, mode, eps, g is not None, write_y, nthreads)
        else:
            K.lp_cols_backward(_as3(dy, shape3), x3, g2, target.reshape(shape3), norms, dots,
                               p, mode, eps, g is not None, nthreads)
    return norms, dots


def _axis3(shape, axis):
    outer = math.prod(shape[:axis])
    return outer, shape[axis], math.prod(shape[axis + 1:])


def _lp_args(x, p, axis, eps):
    x = val.float_array(x, "x")
    if x.ndim == 0:
        raise ValueError("x must have at least one dimension, got a 0-d array")
    axis = val.normalize_axis(axis, x.ndim)
    p, mode = _p_mode(p)
    return x, p, mode, axis, val.check_eps(eps)


@device_variant
def lp_normalize(x, *, p=2, axis=-1, eps=1e-12, out=None):
    """Divides x by its p-norm along ``axis``, clamped below by eps::

        y = x / max(||x||_p, eps),   ||x||_p = (sum_axis |x|^p)^(1/p)   (p = inf: max |x|)

    ``torch.nn.functional.normalize(x, p, dim=axis, eps)``. p is any positive number or
    ``np.inf``; the sums are float64 (p = 2 and p = 1 over 32 interleaved lanes when the axis
    is the last one, column by column otherwise), 2 and 1 without ``pow``. y is x times the
    float64 reciprocal of the clamped norm, rounded once (torch divides: at most an ulp apart).
    A NaN norm gives NaN (as torch's clamp_min).

    Examples
    --------
    >>> import numpy as np, fastnorm.functional as fn
    >>> fn.lp_normalize(np.array([[3.0, 4.0]]))
    array([[0.6, 0.8]])
    >>> fn.lp_normalize(np.array([[3.0, -4.0]]), p=1)
    array([[ 0.42857143, -0.57142857]])
    """
    x, p, mode, axis, eps = _lp_args(x, p, axis, eps)
    out, target = val.out_target(out, x.shape, x.dtype, x)
    if x.size:
        _pnorm_run(x, _axis3(x.shape, axis), None, target, p, mode, eps, True)
    return val.finish(out, target)


@device_variant
def lp_normalize_backward(dy, x, *, p=2, axis=-1, eps=1e-12, out=None):
    """Gradient of ``lp_normalize`` with respect to x (returns dx alone).

    With N = ||x||_p and d = max(N, eps), per slice along ``axis``::

        dx = dy / d - [N >= eps] * (sum dy * x) / d^2 * dN/dx
        dN/dx = x / N (p = 2),  sign(x) (p = 1),  sign(x) |x|^(p-1) / N^(p-1),
                sign(x) [|x| == N] / #{|x| == N} (p = inf, shared among ties as torch does)

    (no second term where N == 0, as torch). float64 throughout; ``out`` receives dx.

    Examples
    --------
    >>> import numpy as np, fastnorm.functional as fn
    >>> fn.lp_normalize_backward(np.array([[1.0, 0.0]]), np.array([[3.0, 4.0]]))
    array([[ 0.128, -0.096]])
    """
    x, p, mode, axis, eps = _lp_args(x, p, axis, eps)
    dy = val.grad_like(dy, x)
    out, target = val.out_target(out, x.shape, x.dtype, x, dy)
    if x.size:
        _pnorm_run(x, _axis3(x.shape, axis), None, target, p, mode, eps, True, dy)
    return val.finish(out, target)


# ---------------------------------------------------------------- weight normalization


def _wn_layout(v_, g, axis):
    """(v, axis, shape3 or None for a moved axis, g as float64 (outer, inner) layout, g's
    shape): the reduction runs over every axis but ``axis`` (all of them for None)."""
    v_ = val.float_array(v_, "v")
    g = val.float_array(g, "g")
    if axis is None:
        if g.size != 1:
            raise ValueError(f"g must hold one value for axis=None, got shape {g.shape}")
        return v_, None, (1, v_.size, 1), g.astype(_F64).reshape(1, 1), g.shape
    if v_.ndim == 0:
        raise ValueError("v must have at least one dimension, got a 0-d array")
    axis = val.normalize_axis(axis, v_.ndim)
    C = v_.shape[axis]
    keep = tuple(C if i == axis else 1 for i in range(v_.ndim))
    if g.shape not in ((C,), keep):
        raise ValueError(f"g must have shape {(C,)} or {keep} for v of shape {v_.shape} and "
                         f"axis={axis}, got {g.shape}")
    g64 = g.astype(_F64).reshape(C)
    if axis == 0:
        return v_, axis, (C, v_.size // C if C else 0, 1), g64.reshape(C, 1), g.shape
    if axis == v_.ndim - 1:
        return v_, axis, (1, v_.size // C if C else 0, C), g64.reshape(1, C), g.shape
    return v_, axis, None, g64.reshape(C, 1), g.shape


def _moved(a, axis):
    """a with ``axis`` moved to the front, C-contiguous, as (C, rest)."""
    m = np.ascontiguousarray(np.moveaxis(a, axis, 0))
    return m.reshape(m.shape[0], -1)


@device_variant
def weight_norm(v, g, *, axis=0, out=None):
    """Weight normalization (Salimans & Kingma 2016): ``w = g * v / ||v||``, the 2-norm taken
    over every axis of v but ``axis`` (over all of v for ``axis=None``), g one value per index
    of ``axis``.

    ``torch._weight_norm(v, g, dim)``, what ``torch.nn.utils.weight_norm`` computes. g may have
    shape (C,) or torch's (C, 1, ..., 1) (C at ``axis``). One difference: torch reads dim=-1 as
    "over the whole tensor"; here -1 is the last axis and None the whole tensor. No eps, as
    torch: a zero slice of v gives NaN. Norms are float64 sums in a fixed order; w is v times
    the float64 factor g / ||v||, rounded once. ``out`` (an extra of ours) receives w.

    Examples
    --------
    >>> import numpy as np, fastnorm.functional as fn
    >>> fn.weight_norm(np.array([[3.0, 4.0], [1.0, 0.0]]), np.array([10.0, 2.0]))
    array([[6., 8.],
           [2., 0.]])
    """
    v_, axis, shape3, g2, _ = _wn_layout(v, g, axis)
    if out is not None:
        out = val.out_array(out, v_.shape, v_.dtype)
    if shape3 is None:
        vm = _moved(v_, axis)
        w = np.empty(vm.shape, v_.dtype)
        if vm.size:
            _pnorm_run(vm, (vm.shape[0], vm.shape[1], 1), g2, w, 2.0, 2, 0.0, True)
        moved_shape = (v_.shape[axis],) + tuple(s for i, s in enumerate(v_.shape) if i != axis)
        w = np.moveaxis(w.reshape(moved_shape), 0, axis)
        if out is None:
            return np.ascontiguousarray(w)
        out[...] = w
        return out
    if out is None:
        out = target = np.empty(v_.shape, v_.dtype)
    else:
        target = val.kernel_target(out, v_)
    if v_.size:
        _pnorm_run(v_, shape3, g2, target, 2.0, 2, 0.0, True)
    return val.finish(out, target)


@device_variant
def weight_norm_backward(dw, v, g, *, axis=0, out=None):
    """Gradients of ``weight_norm``: returns ``(dv, dg)`` (dg in g's shape), per slice
    (Salimans & Kingma, as in the seeds)::

        dg = (dw . v) / ||v||,     dv = (g / ||v||) dw - (g dg / ||v||^2) v

    float64 throughout; the dot products and norms are fixed-order float64 sums. ``out`` (an
    extra of ours, as for ``weight_norm``) receives dv; it may be dw.

    Examples
    --------
    >>> import numpy as np, fastnorm.functional as fn
    >>> dv, dg = fn.weight_norm_backward(np.array([[1.0, 0.0]]), np.array([[3.0, 4.0]]), np.array([5.0]))
    >>> dv, dg
    (array([[ 0.64, -0.48]]), array([0.6]))
    """
    v_, axis, shape3, g2, gshape = _wn_layout(v, g, axis)
    dw = val.float_array(dw, "dw")
    if dw.shape != v_.shape:
        raise ValueError(f"dw and v must have the same shape, got {dw.shape} and {v_.shape}")
    if dw.dtype != v_.dtype:
        raise TypeError(f"dw must have the dtype of v ({v_.dtype}), got {dw.dtype}")
    if out is not None:
        out = val.out_array(out, v_.shape, v_.dtype)
    if shape3 is None:
        vm, dwm = _moved(v_, axis), _moved(dw, axis)
        dvm = np.empty(vm.shape, v_.dtype)
        norms, dots = _pnorm_run(vm, (vm.shape[0], vm.shape[1], 1), g2, dvm, 2.0, 2, 0.0, True, dwm)
        moved_shape = (v_.shape[axis],) + tuple(s for i, s in enumerate(v_.shape) if i != axis)
        dv = np.moveaxis(dvm.reshape(moved_shape), 0, axis)
        if out is None:
            dv = np.ascontiguousarray(dv)
        else:
            out[...] = dv
            dv = out
    else:
        target = np.empty(v_.shape, v_.dtype) if out is None else val.kernel_target(out, v_, dw)
        norms, dots = _pnorm_run(v_, shape3, g2, target, 2.0, 2, 0.0, True, dw)
        dv = target if out is None else val.finish(out, target)
    with np.errstate(divide="ignore", invalid="ignore"):
        dg = (dots / norms).astype(v_.dtype).reshape(gshape)
    return dv, dg


# ---------------------------------------------------------------- cosine normalization


def _cos_args(x, w, eps):
    x = val.float_array(x, "x")
    w = val.float_array(w, "w")
    if x.ndim == 0:
        raise ValueError("x must have at least one dimension, got a 0-d array")
    if w.ndim != 2 or w.shape[1] != x.shape[-1]:
        raise ValueError(f"w must have shape (out_features, {x.shape[-1]}) for x of shape "
                         f"{x.shape}, got {w.shape}")
    if w.dtype != x.dtype:
        raise TypeError(f"w must have the dtype of x ({x.dtype}), got {w.dtype}")
    return x, w, val.check_eps(eps)


def _inv_norms(a2, eps):
    """(norms, 1 / max(norms, eps)) of the rows of a 2-D array, float64."""
    norms = np.empty(a2.shape[0], _F64)
    if a2.size:
        kernels("local").lp_rows(a2, _EMPTY64, a2, norms, 2.0, 2, eps, False, False,
                                 threads_for(a2.size))
    else:
        norms.fill(0.0)
    return norms, 1.0 / np.maximum(norms, eps)


@device_variant
def cosine_linear(x, w, *, eps=1e-8):
    """Cosine normalization of a linear layer: the cosine of the angle between each input row
    and each weight row::

        y[..., o] = (x[..., :] . w[o, :]) / (max(|x|, eps) * max(|w[o]|, eps))

    ``torch.nn.functional.cosine_similarity(x[..., None, :], w, dim=-1, eps)``, i.e.
    ``F.linear(F.normalize(x, eps=eps), F.normalize(w, eps=eps))`` (each norm clamped by eps on
    its own, as torch does). x has shape (..., in_features), w (out_features, in_features),
    y (..., out_features). The row norms are fastnorm's fixed-order float64 sums; the products
    x @ w.T are NumPy's matmul (BLAS) in the input's dtype, scaled by the two float64 inverse
    norms in one pass.

    Examples
    --------
    >>> import numpy as np, fastnorm.functional as fn
    >>> fn.cosine_linear(np.array([[3.0, 4.0]]), np.array([[1.0, 0.0], [0.0, 2.0]]))
    array([[0.6, 0.8]])
    """
    x, w, eps = _cos_args(x, w, eps)
    K = x.shape[-1]
    x2 = val.contiguous(x).reshape(-1, K) if x.size or K else np.empty((math.prod(x.shape[:-1]), 0), x.dtype)
    w2 = val.contiguous(w)
    _, rx = _inv_norms(x2, eps)
    _, rw = _inv_norms(w2, eps)
    z = np.matmul(x2, w2.T)
    if z.size:
        kernels("local").scale_outer(z, rx, rw, z, threads_for(z.size))
    return z.reshape(x.shape[:-1] + (w.shape[0],))


@device_variant
def cosine_linear_backward(dy, x, w, *, eps=1e-8):
    """Gradients of ``cosine_linear``: returns ``(dx, dw)``.

    With rx = 1/max(|x|, eps), rw = 1/max(|w|, eps) and y the forward::

        dx = rx * ((dy * rw) @ w) - [|x| >= eps] * x * rx^2 * sum_o dy * y
        dw = rw * ((dy * rx)^T @ x) - [|w| >= eps] * w * rw^2 * sum_rows dy * y

    (no second term for a zero row, as torch). With G = (dy * rw) @ w and H = (dy * rx)^T @ x,
    the sums of dy * y need no third product: sum_o dy * y = rx * (x . G) per row and
    sum_rows dy * y = rw * (w . H) per output. Computed in float64 (two NumPy matmuls) and
    rounded to the input's dtype.

    Examples
    --------
    >>> import numpy as np, fastnorm.functional as fn
    >>> dx, dw = fn.cosine_linear_backward(np.ones((1, 1)), np.array([[3.0, 4.0]]), np.array([[1.0, 0.0]]))
    >>> dx, dw
    (array([[ 0.128, -0.096]]), array([[0. , 0.8]]))
    """
    x, w, eps = _cos_args(x, w, eps)
    K, O = x.shape[-1], w.shape[0]
    dy = val.float_array(dy, "dy")
    want = x.shape[:-1] + (O,)
    if dy.shape != want:
        raise ValueError(f"dy must have shape {want} (the forward's output), got {dy.shape}")
    if dy.dtype != x.dtype:
        raise TypeError(f"dy must have the dtype of x ({x.dtype}), got {dy.dtype}")
    x2 = val.contiguous(x).reshape(-1, K) if x.size or K else np.empty((math.prod(x.shape[:-1]), 0), x.dtype)
    w2 = val.contiguous(w)
    nx, rx = _inv_norms(x2, eps)
    nw, rw = _inv_norms(w2, eps)
    x64, w64 = x2.astype(_F64), w2.astype(_F64)
    dy64 = dy.reshape(-1, O).astype(_F64)
    G = (dy64 * rw[None, :]) @ w64                                    # (rows, K)
    H = (dy64 * rx[:, None]).T @ x64                                  # (O, K)
    sx = rx * np.einsum("rk,rk->r", x64, G)                           # sum_o dy * y
    sw = rw * np.einsum("ok,ok->o", w64, H)                           # sum_rows dy * y
    kx = np.where((nx >= eps) & (nx > 0), rx * rx, 0.0) * sx
    kw = np.where((nw >= eps) & (nw > 0), rw * rw, 0.0) * sw
    dx = rx[:, None] * G - x64 * kx[:, None]
    dw = rw[:, None] * H - w64 * kw[:, None]
    return dx.astype(x.dtype).reshape(x.shape), dw.astype(x.dtype)
