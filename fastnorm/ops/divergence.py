"""Divergences between discrete distributions, and the 1-D Wasserstein distance.

``entropy``, ``kl_div``, ``cross_entropy`` and ``js_div`` reduce along ``axis`` with SciPy's
semantics (``scipy.stats.entropy``, ``scipy.spatial.distance.jensenshannon``): each input is
first normalized to sum 1 along the axis, 0 log 0 = 0, and a positive p where q = 0 gives inf.
Rows are summed in float64 over 32 fixed lanes with our own exp/log (kernels/numba/divergence.py),
so results are bitwise identical for any thread count and both CPU backends.
"""
import math

import numpy as np

from .. import _validation as v
from .._dispatch import device_variant, host_only, kernels, threads_for

__all__ = ["entropy", "kl_div", "cross_entropy", "js_div", "js_distance", "wasserstein_1d"]

_F64 = np.dtype(np.float64)
ENTROPY, KL, CROSS, JS = 0, 1, 2, 3


def _rows(a, axis):
    """a with ``axis`` moved last, as a C-contiguous (m, n) array (a copy only when needed)."""
    if axis != a.ndim - 1:
        a = np.moveaxis(a, axis, -1)
    n = a.shape[-1]
    if not a.size:
        return np.empty((math.prod(a.shape[:-1]), n), a.dtype)
    if not (a.flags.c_contiguous and a.flags.aligned and a.flags.writeable):
        # one array type per dtype reaches the kernels (numba compiles one per type)
        a = np.array(a, order="C")
    return a.reshape(-1, n)


def _inputs(p, q, axis):
    """(p, q, axis, dtype, shape): both float arrays of one dtype and one broadcast shape."""
    p = v.float_array(p, "p")
    if q is not None:
        q = v.float_array(q, "q")
        if q.shape != p.shape:
            try:
                shape = np.broadcast_shapes(p.shape, q.shape)
            except ValueError:
                raise ValueError(f"p and q must have broadcastable shapes, got {p.shape} and {q.shape}") from None
            p, q = np.broadcast_to(p, shape), np.broadcast_to(q, shape)
        dt = np.promote_types(p.dtype, q.dtype)
        p, q = p.astype(dt, copy=False), q.astype(dt, copy=False)
    if p.ndim == 0:
        raise ValueError("p must have at least one dimension, got a 0-d array")
    axis = v.normalize_axis(axis, p.ndim)
    return p, q, axis, p.dtype, p.shape


def _check_base(base):
    if base is None:
        return None
    base = float(base)
    if not (base > 0.0 and base != 1.0):
        raise ValueError(f"base must be a positive number other than 1, got {base}")
    return base


def _divergence(mode, p, q, axis, base):
    base = _check_base(base)
    p, q, axis, dt, shape = _inputs(p, q, axis)
    p2 = _rows(p, axis)
    q2 = p2 if q is None else _rows(q, axis)
    res = np.empty(p2.shape[0], _F64)
    if p2.shape[0]:
        kernels("divergence").divergence_rows(mode, p2, q2, res, threads_for(p2.size))
    if mode == JS:
        res *= 0.5
    if base is not None:
        res /= np.log(base)
    out = res.astype(dt).reshape(shape[:axis] + shape[axis + 1:])
    return out[()] if out.ndim == 0 else out


@device_variant
def entropy(p, q=None, *, axis=-1, base=None):
    """Shannon entropy of the distributions along ``axis``, or their relative entropy to ``q``::

        p_i <- p_i / sum(p),   H(p) = -sum_i p_i log p_i     (0 log 0 = 0)

    ``scipy.stats.entropy(p, q, base=base, axis=axis)`` semantics, except that ``axis``
    defaults to -1 (SciPy's to 0). With ``q``, the same as ``kl_div(p, q)``. A negative entry
    gives -inf (``scipy.special.entr``); an all-zero row gives NaN (0/0). ``base`` divides by
    log(base) (default: nats). Float32 inputs are summed in float64; the result has the
    input's dtype and shape without ``axis`` (a NumPy scalar for 1-D input).

    Examples
    --------
    >>> import numpy as np, fastnorm.functional as fn
    >>> float(fn.entropy(np.array([1.0, 1.0, 1.0, 1.0]), base=2))
    2.0
    """
    if q is not None:
        return kl_div(p, q, axis=axis, base=base)
    return _divergence(ENTROPY, p, None, axis, base)


@device_variant
def kl_div(p, q, *, axis=-1, base=None):
    """Kullback-Leibler divergence D(p || q) along ``axis``, both inputs normalized first::

        D(p || q) = sum_i p_i log(p_i / q_i)   (0 where p_i = 0; inf where q_i = 0 < p_i)

    ``scipy.stats.entropy(p, q, base=base, axis=axis)`` (``scipy.special.rel_entr`` summed;
    a negative entry gives inf). Not torch's ``F.kl_div(input, target)``, which takes log q
    and does not normalize. p and q broadcast against each other.

    Examples
    --------
    >>> import numpy as np, fastnorm.functional as fn
    >>> round(float(fn.kl_div(np.array([0.5, 0.5]), np.array([0.9, 0.1]))), 6)
    0.510826
    """
    return _divergence(KL, p, q, axis, base)


@device_variant
def cross_entropy(p, q, *, axis=-1, base=None):
    """Cross-entropy H(p, q) = -sum_i p_i log q_i = H(p) + D(p || q) along ``axis``, both
    inputs normalized first (as ``entropy``): 0 where p_i = 0, inf where q_i = 0 < p_i, NaN
    for a negative entry. For logits and class labels see ``softmax_cross_entropy``.

    Examples
    --------
    >>> import numpy as np, fastnorm.functional as fn
    >>> round(float(fn.cross_entropy(np.array([0.5, 0.5]), np.array([0.9, 0.1]))), 6)
    1.203973
    """
    return _divergence(CROSS, p, q, axis, base)


@device_variant
def js_div(p, q, *, axis=-1, base=None):
    """Jensen-Shannon divergence along ``axis``, both inputs normalized first::

        m = (p + q) / 2,   JS(p, q) = (D(p || m) + D(q || m)) / 2

    This is the divergence: ``scipy.spatial.distance.jensenshannon(p, q, base, axis=axis)``
    returns its square root, the Jensen-Shannon *distance* (our ``js_distance``). In [0,
    log 2] (0 to 1 with base=2).

    Examples
    --------
    >>> import numpy as np, fastnorm.functional as fn
    >>> float(fn.js_div(np.array([1.0, 0.0]), np.array([0.0, 1.0]), base=2))
    1.0
    """
    return _divergence(JS, p, q, axis, base)


@device_variant
def js_distance(p, q, *, axis=-1, base=None):
    """sqrt(js_div(p, q)): ``scipy.spatial.distance.jensenshannon(p, q, base, axis=axis)``.

    Examples
    --------
    >>> import numpy as np, fastnorm.functional as fn
    >>> round(float(fn.js_distance(np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0]))), 6)
    0.832555
    """
    d = js_div(p, q, axis=axis, base=base)
    return np.sqrt(d)


def _distribution(values, weights, name):
    values = v.float_array(values, f"{name}_values")
    if values.ndim != 1:
        raise ValueError(f"{name}_values must be 1-D, got shape {values.shape}")
    if values.size == 0:
        raise ValueError(f"{name}_values must not be empty")
    if weights is None:
        return values.astype(_F64), None
    weights = v.float_array(weights, f"{name}_weights")
    if weights.shape != values.shape:
        raise ValueError(f"{name}_weights must have the shape of {name}_values, got {weights.shape} "
                         f"and {values.shape}")
    weights = weights.astype(_F64)
    if not (np.all(weights >= 0) and np.all(np.isfinite(weights))):
        raise ValueError(f"{name}_weights must be finite and non-negative")
    if not weights.sum() > 0:
        raise ValueError(f"{name}_weights must have a positive sum")
    return values.astype(_F64), weights


def _cdf(values, weights, sorter, at):
    idx = values[sorter].searchsorted(at, "right")
    if weights is None:
        return idx / values.size
    cum = np.concatenate(([0.0], np.cumsum(weights[sorter])))
    return cum[idx] / cum[-1]


@host_only("functional")
def wasserstein_1d(u_values, v_values, u_weights=None, v_weights=None):
    """First Wasserstein (earth mover's) distance between two weighted 1-D samples::

        W1(u, v) = integral |U(t) - V(t)| dt,   U, V the (weighted) empirical CDFs

    ``scipy.stats.wasserstein_distance(u_values, v_values, u_weights, v_weights)``, the same
    algorithm (sort both samples, integrate the CDF difference between consecutive points)
    in float64; the result has the inputs' dtype. Weights must be finite, non-negative, with
    a positive sum (ValueError otherwise); None means equal weights.

    Examples
    --------
    >>> import fastnorm.functional as fn
    >>> float(fn.wasserstein_1d([0.0, 1.0, 3.0], [5.0, 6.0, 8.0]))
    5.0
    """
    dt = np.promote_types(v.float_array(u_values, "u_values").dtype,
                          v.float_array(v_values, "v_values").dtype)
    u, uw = _distribution(u_values, u_weights, "u")
    w, vw = _distribution(v_values, v_weights, "v")
    us, vs = np.argsort(u, kind="mergesort"), np.argsort(w, kind="mergesort")
    allv = np.concatenate((u, w))
    allv.sort(kind="mergesort")
    deltas = np.diff(allv)
    ucdf = _cdf(u, uw, us, allv[:-1])
    vcdf = _cdf(w, vw, vs, allv[:-1])
    return dt.type(np.sum(np.abs(ucdf - vcdf) * deltas))
