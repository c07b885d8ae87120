"""Batch-statistics normalizations: BatchNorm, InstanceNorm, GroupNorm (forward and backward),
mergeable moments, and folding an eval-mode BatchNorm into the layer before it.

Every op views its input, without copying, as x3 = (outer, C, inner) and walks it by stride:
NCHW BatchNorm is (N, C, H*W), channels-last (``axis=-1``) is (N*H*W, C, 1), InstanceNorm is
(N, C, H*W) with statistics per (n, c), GroupNorm is (N, G, C/G*H*W) with statistics per
(n, g). Statistics are float64 moments (count, mean, m2) of fixed pieces of the data, merged
with Chan's formula (``merge_moments``) in a fixed order: results are bitwise the same for any
thread count and on both CPU backends, and a float32 output stays within 1e-5 of a float64
reference even when |mean| is 1e6 times the spread.
"""
import math
from typing import NamedTuple

import numpy as np

from .. import _validation as v
from .._dispatch import device_variant, host_only, kernels, threads_for

__all__ = ["batch_norm", "batch_norm_backward", "instance_norm", "instance_norm_backward",
           "group_norm", "group_norm_backward", "moments", "merge_moments", "Moments",
           "fold_batch_norm"]

_F64 = np.dtype(np.float64)
#: elements per segment piece: the unit of the statistics' fixed merge order
CHUNK = 4096
#: BatchNorm on data whose ``inner`` is below this uses column pieces (channels-last, (N, C))
COLUMN_INNER = 32
#: elements per block of column pieces (rows per block = max(1, COLUMN_BLOCK // (C * inner)))
COLUMN_BLOCK = 16384


# ---------------------------------------------------------------- moments


class Moments(NamedTuple):
    """Mergeable partial statistics: ``count`` values with mean ``mean`` and sum of squared
    deviations ``m2`` (float64; arrays of the kept shape, count an int)."""

    count: int
    mean: np.ndarray
    m2: np.ndarray

    def var(self, ddof=0):
        """m2 / (count - ddof): the biased (ddof=0) or unbiased (ddof=1) variance."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.asarray(self.m2, _F64) / (self.count - ddof)


def _view3(x, axis):
    """(x3, outer, C, inner): x (C-contiguous, copied only when its layout needs it) viewed as
    (prod(shape[:axis]), shape[axis], prod(shape[axis+1:]))."""
    shape = x.shape
    outer, C, inner = math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:])
    return v.contiguous(x).reshape(outer, C, inner), outer, C, inner


def _pieces(inner):
    npieces = -(-inner // CHUNK)
    lens = np.full(npieces, CHUNK, _F64)
    if npieces:
        lens[-1] = inner - (npieces - 1) * CHUNK
    return npieces, lens


def _column_rows(C, inner):
    return max(1, COLUMN_BLOCK // max(1, C * inner))


def _channel_moments(x3, nthreads):
    """(mean[C], m2[C]) over axes 0 and 2 of x3 = (outer, C, inner); data not empty."""
    outer, C, inner = x3.shape
    k = kernels("batch")
    if inner >= COLUMN_INNER:
        npieces, lens = _pieces(inner)
        pmean = np.empty((outer, npieces, C))
        pm2 = np.empty((outer, npieces, C))
        k.segment_moments(x3, CHUNK, pmean, pm2, nthreads)
        cnt = np.tile(lens, outer)
    else:
        rb = _column_rows(C, inner)
        nblocks = -(-outer // rb)
        pmean = np.empty((nblocks, inner, C))
        pm2 = np.empty((nblocks, inner, C))
        k.column_moments(x3, rb, pmean, pm2, np.empty(2 * nblocks * C * inner), nthreads)
        rows = np.full(nblocks, rb, _F64)
        rows[-1] = outer - (nblocks - 1) * rb
        cnt = np.repeat(rows, inner)
    mean = np.empty((1, C))
    m2 = np.empty((1, C))
    k.merge_pieces(cnt, pmean.reshape(1, -1, C), pm2.reshape(1, -1, C), mean, m2, nthreads)
    return mean[0], m2[0]


def _row_moments(x3, nthreads):
    """(mean, m2) of shape (outer, C): statistics of each (o, c) segment; inner > 0."""
    outer, C, inner = x3.shape
    k = kernels("batch")
    npieces, lens = _pieces(inner)
    pmean = np.empty((outer, npieces, C))
    pm2 = np.empty((outer, npieces, C))
    k.segment_moments(x3, CHUNK, pmean, pm2, nthreads)
    mean = np.empty((outer, C))
    m2 = np.empty((outer, C))
    k.merge_pieces(lens, pmean, pm2, mean, m2, nthreads)
    return mean, m2


def _fused_rows(x3, per, w, b, eps, y3):
    """Statistics of each row (n, g) of x3 = (N, G, L) (as ``_row_moments``, bit for bit) and
    y3 = (x - mean) * (invstd * w_c) + b_c for the row's ``per`` channels, in one visit of the
    row (it is normalized while still in cache). Returns (mean, m2), (N, G)."""
    N, G, L = x3.shape
    C = G * per
    mean = np.empty((N, G))
    m2 = np.empty((N, G))
    kernels("batch").group_forward(x3, per, CHUNK, _f64(w, C, 1.0), _f64(b, C, 0.0), eps, y3,
                                   mean, m2, threads_for(x3.size))
    return mean, m2


def _fused_rows_backward(dy3, x3, per, w, mean, invstd, dx3):
    """InstanceNorm/GroupNorm backward with the rows' own statistics, one visit of each row
    (n, g) of (N, G, L): dx3, and the per-channel sums (sum dy, sum dy * xhat), (N, C)."""
    N, G, L = x3.shape
    C = G * per
    s1 = np.empty((N, C))
    s2 = np.empty((N, C))
    kernels("batch").group_backward(dy3, x3, per, CHUNK, _f64(w, C, 1.0),
                                    np.ascontiguousarray(mean, _F64), np.ascontiguousarray(invstd, _F64),
                                    dx3, s1, s2, threads_for(x3.size))
    return s1, s2


def _channel_grad_sums(dy3, x3, mean, rstd, nthreads):
    """(sum dy, sum dy * xhat) per channel, xhat = (x - mean[c]) * rstd[c]: arrays (C,)."""
    outer, C, inner = x3.shape
    k = kernels("batch")
    mean2, rstd2 = mean.reshape(1, C), rstd.reshape(1, C)
    if inner >= COLUMN_INNER:
        npieces, _ = _pieces(inner)
        psg = np.empty((outer, npieces, C))
        psgx = np.empty((outer, npieces, C))
        k.segment_grad_sums(dy3, x3, mean2, rstd2, CHUNK, psg, psgx, nthreads)
    else:
        rb = _column_rows(C, inner)
        nblocks = -(-outer // rb)
        psg = np.empty((nblocks, inner, C))
        psgx = np.empty((nblocks, inner, C))
        k.column_grad_sums(dy3, x3, mean2, rstd2, rb, psg, psgx,
                           np.empty(2 * (nblocks + 1) * C * inner), nthreads)
    s1 = np.empty((1, C))
    s2 = np.empty((1, C))
    k.sum_pieces(psg.reshape(1, -1, C), psgx.reshape(1, -1, C), s1, s2, nthreads)
    return s1[0], s2[0]


def _row_grad_sums(dy3, x3, mean, rstd, nthreads):
    """(sum dy, sum dy * xhat) per (o, c) segment, mean/rstd of shape (outer, C)."""
    outer, C, inner = x3.shape
    k = kernels("batch")
    npieces, _ = _pieces(inner)
    psg = np.empty((outer, npieces, C))
    psgx = np.empty((outer, npieces, C))
    k.segment_grad_sums(dy3, x3, mean, rstd, CHUNK, psg, psgx, nthreads)
    s1 = np.empty((outer, C))
    s2 = np.empty((outer, C))
    k.sum_pieces(psg, psgx, s1, s2, nthreads)
    return s1, s2


def _reduced_axes(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) and not isinstance(axis, bool) else tuple(axis)
    red = tuple(sorted(v.normalize_axis(a, ndim) for a in axes))
    if len(set(red)) != len(red):
        raise ValueError(f"axis {axis} repeats an axis")
    return red


@device_variant
def moments(x, axis=None):
    """Mergeable statistics of ``x`` reduced over ``axis`` (an int, a tuple, or None: all).

    Returns ``Moments(count, mean, m2)``: the number of values reduced, their mean and the sum
    of squared deviations from it (float64, of the kept axes' shape). ``merge_moments`` combines
    the moments of two parts into those of the whole (Chan et al.), so statistics can be taken
    per chunk, per process or per machine and merged, the one synchronization of a SyncBN.
    The same pieces and merge order as the normalization kernels: ``moments(x, (0, 2, 3))``
    of an NCHW batch is bit for bit what ``batch_norm`` normalizes with
    (mean, and var = m2 / count).

    Examples
    --------
    >>> import numpy as np, fastnorm.functional as fn
    >>> x = np.arange(12.0).reshape(2, 3, 2)
    >>> m = fn.moments(x, (0, 2))
    >>> m.count, m.mean, m.var()
    (4, array([3.5, 5.5, 7.5]), array([9.25, 9.25, 9.25]))
    >>> a, b = fn.moments(x[:1], (0, 2)), fn.moments(x[1:], (0, 2))
    >>> fn.merge_moments(a, b).mean
    array([3.5, 5.5, 7.5])
    """
    x = v.float_array(x, "x")
    red = _reduced_axes(axis, x.ndim)
    kept = tuple(a for a in range(x.ndim) if a not in red)
    kept_shape = tuple(x.shape[a] for a in kept)
    count = math.prod(x.shape[a] for a in red)
    if kept and kept != tuple(range(kept[0], kept[-1] + 1)):
        x = x.transpose(kept + red)
        kept = tuple(range(len(kept)))
    a0 = kept[0] if kept else 0
    a1 = kept[-1] + 1 if kept else 0
    shape = x.shape
    outer, C, inner = math.prod(shape[:a0]), math.prod(shape[a0:a1]), math.prod(shape[a1:])
    if count == 0 or C == 0:
        return Moments(count, np.full(kept_shape, np.nan), np.full(kept_shape, np.nan))
    x3 = v.contiguous(x).reshape(outer, C, inner)
    mean, m2 = _channel_moments(x3, threads_for(x3.size))
    return Moments(count, mean.reshape(kept_shape), m2.reshape(kept_shape))


@host_only("functional")
def merge_moments(a, b):
    """Chan's parallel merge: the moments of the union of the data of ``a`` and ``b``::

        n = na + nb,  d = mean_b - mean_a
        mean = mean_a + d * nb / n,   m2 = m2_a + m2_b + d^2 * na * nb / n

    Associative (up to rounding) and exact for any split of the data; a part with count 0
    is the identity. Arrays broadcast.

    Examples
    --------
    >>> import numpy as np, fastnorm.functional as fn
    >>> m = fn.merge_moments(fn.moments(np.array([1.0, 2.0])), fn.moments(np.array([3.0, 6.0])))
    >>> m.count, float(m.mean), float(m.m2)
    (4, 3.0, 14.0)
    """
    na, ma, qa = a
    nb, mb, qb = b
    fa, fb = np.asarray(na, _F64), np.asarray(nb, _F64)
    ma, qa, mb, qb = (np.asarray(t, _F64) for t in (ma, qa, mb, qb))
    n = fa + fb
    with np.errstate(divide="ignore", invalid="ignore"):
        d = mb - ma
        mean = ma + d * (fb / n)
        m2 = (qa + qb) + d * d * (fa * fb / n)
    mean = np.where(fa == 0, mb, np.where(fb == 0, ma, mean))
    m2 = np.where(fa == 0, qb, np.where(fb == 0, qa, m2))
    count = na + nb
    return Moments(count, mean, m2)


# ---------------------------------------------------------------- shared checks


def _check_x(x, name="x"):
    x = v.float_array(x, name)
    if x.ndim < 2:
        raise ValueError(f"{name} must have at least 2 dimensions (N, C, *), got shape {x.shape}")
    return x


def _out(out, x, *inputs):
    return v.out_target(out, x.shape, x.dtype, x, *inputs)


def _running(a, name, C, update):
    """A running statistic: None, or a float array of shape (C,); one updated in place must be
    a writeable ndarray."""
    if a is None:
        return None
    if update and type(a) is not np.ndarray:
        raise TypeError(f"{name} must be a numpy.ndarray (it is updated in place in training), "
                        f"got {type(a).__name__}")
    arr = v.float_array(a, name) if type(a) is not np.ndarray or a.dtype.kind == "f" else None
    if arr is None:
        raise TypeError(f"{name} must be a float32 or float64 array, got dtype {a.dtype}")
    if arr.shape != (C,):
        raise ValueError(f"{name} must have shape ({C},), got {arr.shape}")
    if update and not a.flags.writeable:
        raise ValueError(f"{name} is read-only (it is updated in place in training)")
    return a if update else arr


def _momentum(momentum, num_batches_tracked):
    if momentum is None:
        if num_batches_tracked is None:
            raise ValueError("momentum=None (a cumulative average) needs num_batches_tracked: "
                             "the number of batches seen, this one included")
        return 1.0 / float(np.asarray(num_batches_tracked))
    momentum = float(momentum)
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}")
    return momentum


def _update(running, value):
    """running <- value (float64), rounded to running's dtype, in place."""
    running[...] = value


def _f64(a, C, default):
    return np.full(C, default) if a is None else np.asarray(a, _F64)


def _stats_pair(stats, shape):
    if not isinstance(stats, (tuple, list)) or len(stats) != 2:
        raise ValueError("stats must be the (mean, invstd) pair returned with return_stats=True")
    out = []
    for s, name in zip(stats, ("stats[0] (mean)", "stats[1] (invstd)")):
        s = v.float_array(s, name)
        if s.shape != shape:
            raise ValueError(f"{name} must have shape {shape} (the forward's statistics), got {s.shape}")
        out.append(np.ascontiguousarray(s, _F64))
    return out


# ---------------------------------------------------------------- batch_norm


def _bn_setup(x, running_mean, running_var, weight, bias, training, axis, eps, backward=False):
    x = _check_x(x)
    axis = v.normalize_axis(axis, x.ndim)
    C = x.shape[axis]
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must be given together (or both None)")
    if not training and running_mean is None:
        raise ValueError("running_mean must be defined in evaluation mode (training=False), as in torch")
    use_batch = bool(training)
    update = bool(training) and running_mean is not None and not backward
    rm = _running(running_mean, "running_mean", C, update)
    rv = _running(running_var, "running_var", C, update)
    w = v.param_array(weight, "weight", (C,), x.dtype)
    b = v.param_array(bias, "bias", (C,), x.dtype)
    eps = v.check_eps(eps)
    return x, axis, C, use_batch, update, rm, rv, w, b, eps


def _bn_batch_stats(x3, training, shape, eps):
    outer, C, inner = x3.shape
    n = outer * inner
    if training and n == 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {shape}")
    mean, m2 = _channel_moments(x3, threads_for(x3.size))
    return mean, m2, 1.0 / np.sqrt(m2 / n + eps)


@device_variant
def batch_norm(x, running_mean=None, running_var=None, weight=None, bias=None, *, training=False,
               momentum=0.1, eps=1e-5, axis=1, out=None, return_stats=False,
               num_batches_tracked=None):
    """Batch normalization over every axis but the channel axis ``axis``.

    With per-channel statistics over the N * (spatial) values of channel c::

        y = (x - mean_c) / sqrt(var_c + eps) * weight_c + bias_c

    ``torch.nn.functional.batch_norm`` semantics: in training mean/var are the batch's (var
    biased) and running statistics, when given, are updated in place::

        running_mean = (1 - momentum) * running_mean + momentum * mean
        running_var  = (1 - momentum) * running_var  + momentum * var * n / (n - 1)  (unbiased)

    and ``momentum=None`` means the cumulative average, momentum = 1 / num_batches_tracked
    (the number of batches seen, this one included; ``nn.BatchNorm*`` keeps the count).
    Keras' ``BatchNormalization(momentum=m)`` and ONNX's ``BatchNormalization`` weigh the old
    value instead (running = m * running + (1 - m) * batch): ours = 1 - theirs, e.g. Keras'
    0.99 is our 0.01. In eval (``training=False``, running statistics required, as in torch)
    ``y = (x - running_mean) / sqrt(running_var + eps) * weight + bias`` (ONNX
    BatchNormalization in inference mode). A single value per channel in training raises
    ValueError, as torch does.

    Layout (N, C, *) with C at ``axis`` (default 1), or channels-last with ``axis=-1``: the
    input is walked by stride, never transposed. Statistics: float64 moments of fixed pieces
    merged in a fixed order (see ``moments``), bitwise the same for any thread count and both
    CPU backends; y = (x - mean) * (invstd * weight) + bias in float64, rounded once.

    Parameters
    ----------
    x : float32/float64 array with at least 2 dimensions.
    running_mean, running_var : arrays of shape (C,) or None (both or neither).
    weight, bias : arrays of shape (C,) or None.
    training, momentum, eps : as in torch; ``num_batches_tracked`` for ``momentum=None``.
    axis : the channel axis. out : receives y (may be x). return_stats : also return the
        (mean, invstd) used, float64 of shape (C,).

    Examples
    --------
    >>> import numpy as np, fastnorm.functional as fn
    >>> x = np.array([[1.0, 10.0], [3.0, 30.0]])
    >>> rm, rv = np.zeros(2), np.ones(2)
    >>> fn.batch_norm(x, rm, rv, training=True, eps=0.0)
    array([[-1., -1.],
           [ 1.,  1.]])
    >>> rm, rv
    (array([0.2, 2. ]), array([ 1.1, 20.9]))
    """
    x, axis, C, use_batch, update, rm, rv, w, b, eps = _bn_setup(
        x, running_mean, running_var, weight, bias, training, axis, eps)
    factor = _momentum(momentum, num_batches_tracked) if update else 0.0
    out, target = _out(out, x, w, b, rm, rv)
    x3, outer, C, inner = _view3(x, axis)
    if use_batch:
        if x.size == 0:
            mean = invstd = np.full(C, np.nan)
        else:
            mean, m2, invstd = _bn_batch_stats(x3, training, x.shape, eps)
            if update:
                n = outer * inner
                with np.errstate(divide="ignore", invalid="ignore"):
                    _update(rm, (1.0 - factor) * np.asarray(rm, _F64) + factor * mean)
                    _update(rv, (1.0 - factor) * np.asarray(rv, _F64) + factor * (m2 / (n - 1)))
    else:
        mean = np.asarray(rm, _F64)
        invstd = 1.0 / np.sqrt(np.asarray(rv, _F64) + eps)
    if x.size:
        scale = invstd * _f64(w, C, 1.0)
        shift = _f64(b, C, 0.0)
        kernels("batch").affine_apply(x3, mean.reshape(1, C), scale.reshape(1, C),
                                      shift.reshape(1, C), target.reshape(x3.shape),
                                      threads_for(x.size))
    out = v.finish(out, target)
    return (out, mean, invstd) if return_stats else out


def _bn_grad_apply(dy3, x3, mean, invstd, w, s1, s2, n, dx3, nthreads):
    """dx3 from the per-channel sums s1 = sum dy, s2 = sum dy * xhat over the n values of each
    channel (batch statistics; n None: running statistics, dx = dy * weight * invstd). The
    sums may be of more data than x3 holds: SyncBatchNorm passes the sums of every rank."""
    C = x3.shape[1]
    a = invstd * _f64(w, C, 1.0)
    if n is not None:
        bcoef = -a * invstd * (s2 / n)
        ccoef = -a * (s1 / n)
    else:
        bcoef = ccoef = np.zeros(C)
    kernels("batch").grad_apply(dy3, x3, mean.reshape(1, C), a.reshape(1, C), bcoef.reshape(1, C),
                                ccoef.reshape(1, C), dx3, nthreads)


@device_variant
def batch_norm_backward(dy, x, running_mean=None, running_var=None, weight=None, bias=None, *,
                        training=False, momentum=0.1, eps=1e-5, axis=1, out=None,
                        return_stats=False, num_batches_tracked=None, stats=None):
    """Gradients of ``batch_norm``: returns ``(dx, dweight, dbias)`` (None where weight/bias
    is None). Running statistics are read, never updated.

    With xhat = (x - mean) * invstd, per channel over its n values, batch statistics
    (training)::

        dx = weight * invstd * (dy - mean(dy) - xhat * mean(dy * xhat))

    and with running statistics in eval, ``dx = dy * weight * invstd``;
    ``dweight = sum dy * xhat``, ``dbias = sum dy`` either way (torch autograd's gradients).
    ``stats=(mean, invstd)`` from the forward's ``return_stats=True`` spares recomputing them.

    Examples
    --------
    >>> import numpy as np, fastnorm.functional as fn
    >>> x = np.array([[1.0], [3.0]]); w = np.ones(1); b = np.zeros(1)
    >>> dx, dw, db = fn.batch_norm_backward(np.array([[1.0], [0.0]]), x, None, None, w, b, training=True, eps=0.0)
    >>> dx.ravel(), dw, db
    (array([0., 0.]), array([-1.]), array([1.]))
    """
    x, axis, C, use_batch, _, rm, rv, w, b, eps = _bn_setup(
        x, running_mean, running_var, weight, bias, training, axis, eps, backward=True)
    dy = v.grad_like(dy, x)
    out, target = _out(out, x, dy, w, b)
    x3, outer, C, inner = _view3(x, axis)
    dt = x.dtype
    if x.size == 0:
        zeros = np.zeros(C, dt)
        return out, None if w is None else zeros, None if b is None else zeros.copy()
    if stats is not None:
        mean, invstd = _stats_pair(stats, (C,))
    elif use_batch:
        mean, _, invstd = _bn_batch_stats(x3, False, x.shape, eps)
    else:
        mean = np.asarray(rm, _F64)
        invstd = 1.0 / np.sqrt(np.asarray(rv, _F64) + eps)
    dy3 = v.contiguous(dy).reshape(x3.shape)
    nthreads = threads_for(x.size)
    s1, s2 = _channel_grad_sums(dy3, x3, mean, invstd, nthreads)
    _bn_grad_apply(dy3, x3, mean, invstd, w, s1, s2, outer * inner if use_batch else None,
                   target.reshape(x3.shape), nthreads)
    dx = v.finish(out, target)
    return dx, None if w is None else s2.astype(dt), None if b is None else s1.astype(dt)


# ---------------------------------------------------------------- instance_norm


def _in_setup(x, weight, bias, running_mean, running_var, training, eps):
    x = _check_x(x)
    C = x.shape[1]
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must be given together (or both None)")
    if not training and running_mean is None:
        raise ValueError("instance_norm with training=False (use_input_stats=False) needs "
                         "running_mean and running_var")
    update = bool(training) and running_mean is not None
    rm = _running(running_mean, "running_mean", C, update)
    rv = _running(running_var, "running_var", C, update)
    w = v.param_array(weight, "weight", (C,), x.dtype)
    b = v.param_array(bias, "bias", (C,), x.dtype)
    return x, C, update, rm, rv, w, b, v.check_eps(eps)


@device_variant
def instance_norm(x, weight=None, bias=None, running_mean=None, running_var=None, *,
                  training=True, momentum=0.1, eps=1e-5, out=None, return_stats=False):
    """Instance normalization: each (n, c) of x (N, C, *) normalized over its spatial values::

        y = (x - mean_nc) / sqrt(var_nc + eps) * weight_c + bias_c

    ``torch.nn.functional.instance_norm`` with ``use_input_stats=training``; ONNX
    InstanceNormalization. With running statistics, training updates them in place with the
    instance statistics averaged over the batch (running_var from the unbiased variances);
    ``training=False`` normalizes with the running statistics. One spatial value per instance
    in training raises ValueError, as torch does.

    Returns y, or ``(y, mean, invstd)`` with return_stats, float64 of shape (N, C).

    Examples
    --------
    >>> import numpy as np, fastnorm.functional as fn
    >>> fn.instance_norm(np.array([[[1.0, 3.0], [0.0, 10.0]]]), eps=0.0)
    array([[[-1.,  1.],
            [-1.,  1.]]])
    """
    x, C, update, rm, rv, w, b, eps = _in_setup(x, weight, bias, running_mean, running_var,
                                                training, eps)
    out, target = _out(out, x, w, b, rm, rv)
    x3, N, C, inner = _view3(x, 1)
    if training:
        if x.size and inner == 1:
            raise ValueError(f"Expected more than 1 spatial element when training, got input size {x.shape}")
        if x.size == 0:
            mean = invstd = np.full((N, C), np.nan)
        else:
            mean, m2 = _fused_rows(x3, 1, w, b, eps, target.reshape(x3.shape))
            invstd = 1.0 / np.sqrt(m2 / inner + eps)
            if update and N:
                f = _momentum(momentum, None)
                _update(rm, (1.0 - f) * np.asarray(rm, _F64) + f * mean.mean(axis=0))
                _update(rv, (1.0 - f) * np.asarray(rv, _F64) + f * (m2 / (inner - 1)).mean(axis=0))
    else:
        mean = np.broadcast_to(np.asarray(rm, _F64), (N, C)).copy()
        invstd = np.broadcast_to(1.0 / np.sqrt(np.asarray(rv, _F64) + eps), (N, C)).copy()
    if x.size and not training:
        kernels("batch").affine_apply(x3, mean, invstd * _f64(w, C, 1.0),
                                      np.broadcast_to(_f64(b, C, 0.0), (N, C)).copy(),
                                      target.reshape(x3.shape), threads_for(x.size))
    out = v.finish(out, target)
    return (out, mean, invstd) if return_stats else out


@device_variant
def instance_norm_backward(dy, x, weight=None, bias=None, running_mean=None, running_var=None, *,
                           training=True, momentum=0.1, eps=1e-5, out=None, return_stats=False,
                           stats=None):
    """Gradients of ``instance_norm``: ``(dx, dweight, dbias)``. Per (n, c), with input
    statistics (training)::

        dx = weight_c * invstd * (dy - mean(dy) - xhat * mean(dy * xhat))

    with running statistics ``dx = dy * weight_c * invstd``; ``dweight = sum dy * xhat`` and
    ``dbias = sum dy`` over n and the spatial axes. Running statistics are not updated.

    Examples
    --------
    >>> import numpy as np, fastnorm.functional as fn
    >>> x = np.array([[[1.0, 3.0]]]); w = np.ones(1); b = np.zeros(1)
    >>> dx, dw, db = fn.instance_norm_backward(np.ones_like(x), x, w, b, eps=0.0)
    >>> dx.ravel(), dw, db
    (array([0., 0.]), array([0.]), array([2.]))
    """
    x, C, _, rm, rv, w, b, eps = _in_setup(x, weight, bias, running_mean, running_var, training, eps)
    dy = v.grad_like(dy, x)
    out, target = _out(out, x, dy, w, b)
    x3, N, C, inner = _view3(x, 1)
    dt = x.dtype
    if x.size == 0:
        zeros = np.zeros(C, dt)
        return out, None if w is None else zeros, None if b is None else zeros.copy()
    nthreads = threads_for(x.size)
    if stats is not None:
        mean, invstd = _stats_pair(stats, (N, C))
    elif training:
        mean, m2 = _row_moments(x3, nthreads)
        invstd = 1.0 / np.sqrt(m2 / inner + eps)
    else:
        mean = np.broadcast_to(np.asarray(rm, _F64), (N, C)).copy()
        invstd = np.broadcast_to(1.0 / np.sqrt(np.asarray(rv, _F64) + eps), (N, C)).copy()
    dy3 = v.contiguous(dy).reshape(x3.shape)
    if training:
        s1, s2 = _fused_rows_backward(dy3, x3, 1, w, mean, invstd, target.reshape(x3.shape))
    else:
        s1, s2 = _row_grad_sums(dy3, x3, mean, invstd, nthreads)
        zeros = np.zeros((N, C))
        kernels("batch").grad_apply(dy3, x3, mean, invstd * _f64(w, C, 1.0), zeros, zeros,
                                    target.reshape(x3.shape), nthreads)
    dx = v.finish(out, target)
    dweight = None if w is None else s2.sum(axis=0).astype(dt)
    dbias = None if b is None else s1.sum(axis=0).astype(dt)
    return dx, dweight, dbias


# ---------------------------------------------------------------- group_norm


def _gn_setup(x, num_groups, weight, bias, eps):
    x = _check_x(x)
    C = x.shape[1]
    if isinstance(num_groups, bool) or not isinstance(num_groups, (int, np.integer)):
        raise TypeError(f"num_groups must be an int, got {type(num_groups).__name__}")
    G = int(num_groups)
    if G < 1 or C % G:
        raise ValueError(f"num_groups={G} must be positive and divide the number of channels {C} "
                         f"(x of shape {x.shape})")
    w = v.param_array(weight, "weight", (C,), x.dtype)
    b = v.param_array(bias, "bias", (C,), x.dtype)
    return x, C, G, w, b, v.check_eps(eps)


@device_variant
def group_norm(x, num_groups, weight=None, bias=None, *, eps=1e-5, out=None, return_stats=False):
    """Group normalization: the C channels of x (N, C, *) split into ``num_groups`` groups of
    C/G consecutive channels, each (n, group) normalized over its C/G * spatial values::

        y = (x - mean_ng) / sqrt(var_ng + eps) * weight_c + bias_c

    ``torch.nn.functional.group_norm(x, num_groups, weight, bias, eps)``; ONNX
    GroupNormalization (opset 21). Returns y, or ``(y, mean, invstd)`` with return_stats,
    float64 of shape (N, num_groups).

    Examples
    --------
    >>> import numpy as np, fastnorm.functional as fn
    >>> fn.group_norm(np.array([[[1.0], [3.0], [4.0], [6.0]]]), 2, eps=0.0).ravel()
    array([-1.,  1., -1.,  1.])
    """
    x, C, G, w, b, eps = _gn_setup(x, num_groups, weight, bias, eps)
    out, target = _out(out, x, w, b)
    N = x.shape[0]
    xc = v.contiguous(x)
    L = x.size // (N * G) if N * G else 0
    if x.size == 0:
        mean = invstd = np.full((N, G), np.nan)
    else:
        mean, m2 = _fused_rows(xc.reshape(N, G, L), C // G, w, b, eps, target.reshape(N, G, L))
        invstd = 1.0 / np.sqrt(m2 / L + eps)
    out = v.finish(out, target)
    return (out, mean, invstd) if return_stats else out


@device_variant
def group_norm_backward(dy, x, num_groups, weight=None, bias=None, *, eps=1e-5, out=None,
                        return_stats=False, stats=None):
    """Gradients of ``group_norm``: ``(dx, dweight, dbias)``. With g = dy * weight_c and
    xhat = (x - mean_ng) * invstd_ng, over each group's L values::

        dx = invstd * (g - mean(g) - xhat * mean(g * xhat))
        dweight_c = sum dy * xhat,   dbias_c = sum dy   (over n and the spatial axes)

    Examples
    --------
    >>> import numpy as np, fastnorm.functional as fn
    >>> x = np.array([[[1.0], [3.0]]]); w = np.ones(2); b = np.zeros(2)
    >>> dx, dw, db = fn.group_norm_backward(np.ones_like(x), x, 1, w, b, eps=0.0)
    >>> dx.ravel(), dw, db
    (array([0., 0.]), array([-1.,  1.]), array([1., 1.]))
    """
    x, C, G, w, b, eps = _gn_setup(x, num_groups, weight, bias, eps)
    dy = v.grad_like(dy, x)
    out, target = _out(out, x, dy, w, b)
    N = x.shape[0]
    dt = x.dtype
    if x.size == 0:
        zeros = np.zeros(C, dt)
        return out, None if w is None else zeros, None if b is None else zeros.copy()
    nthreads = threads_for(x.size)
    xc = v.contiguous(x)
    L = x.size // (N * G)
    if stats is not None:
        mean, invstd = _stats_pair(stats, (N, G))
    else:
        mean, m2 = _row_moments(xc.reshape(N, G, L), nthreads)
        invstd = 1.0 / np.sqrt(m2 / L + eps)
    s1, s2 = _fused_rows_backward(v.contiguous(dy).reshape(N, G, L), xc.reshape(N, G, L), C // G,
                                  w, mean, invstd, target.reshape(N, G, L))
    dx = v.finish(out, target)
    dweight = None if w is None else s2.sum(axis=0).astype(dt)
    dbias = None if b is None else s1.sum(axis=0).astype(dt)
    return dx, dweight, dbias


# ---------------------------------------------------------------- folding


@host_only("functional")
def fold_batch_norm(weight, bias, bn_state, *, eps=1e-5):
    """Fold an eval-mode BatchNorm into the linear/conv layer before it: returns
    ``(weight', bias')`` such that ``bn(layer(x)) == layer'(x)``::

        s = gamma / sqrt(running_var + eps)
        weight' = weight * s (over output channels, weight's axis 0)
        bias'   = (bias - running_mean) * s + beta      (bias None: 0)

    ``bn_state``: the BatchNorm's state_dict (running_mean, running_var and, when affine,
    weight = gamma and bias = beta), e.g. ``nn.BatchNorm2d.state_dict()`` or a torch one
    converted to NumPy. Results have the layer weight's dtype, computed in float64.

    Examples
    --------
    >>> import numpy as np, fastnorm.functional as fn
    >>> state = {"running_mean": np.array([1.0]), "running_var": np.array([4.0]),
    ...          "weight": np.array([2.0]), "bias": np.array([0.5])}
    >>> fn.fold_batch_norm(np.array([[3.0, 1.0]]), np.array([2.0]), state, eps=0.0)
    (array([[3., 1.]]), array([1.5]))
    """
    w = v.float_array(weight, "weight")
    if w.ndim < 1:
        raise ValueError(f"weight must have at least 1 dimension (output channels first), got {w.shape}")
    C = w.shape[0]
    try:
        rm, rv = bn_state["running_mean"], bn_state["running_var"]
    except (KeyError, TypeError):
        raise ValueError("bn_state must be a BatchNorm state_dict with running_mean and running_var") from None
    rm = _f64(v.param_array(rm, "running_mean", (C,), _F64), C, 0.0)
    rv = _f64(v.param_array(rv, "running_var", (C,), _F64), C, 1.0)
    gamma = _f64(v.param_array(bn_state.get("weight"), "bn_state['weight']", (C,), _F64), C, 1.0)
    beta = _f64(v.param_array(bn_state.get("bias"), "bn_state['bias']", (C,), _F64), C, 0.0)
    b = _f64(v.param_array(bias, "bias", (C,), _F64), C, 0.0)
    s = gamma / np.sqrt(rv + v.check_eps(eps))
    new_w = (np.asarray(w, _F64) * s.reshape((C,) + (1,) * (w.ndim - 1))).astype(w.dtype)
    new_b = ((b - rm) * s + beta).astype(w.dtype)
    return new_w, new_b
