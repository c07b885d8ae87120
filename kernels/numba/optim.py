"""Optimizer update loops (SGD, Adagrad, Adadelta, RMSprop, Adam/AdamW) for Numba's CPU target.

Multi-tensor layout, shared with kernels/cython/optim.pyx: one launch updates any number of
tensors of one dtype.

- ``ptrs`` (T, S) int64: the data addresses of tensor t's arrays, slot by slot (param, grad,
  then the algorithm's state arrays, 0 where absent); every array C-contiguous, native order.
- ``chunks`` (C, 3) int64: (tensor, start, stop) ranges of at most ``CHUNK`` elements; the
  parallel loop runs over chunks, so one large tensor and many small ones both fill every
  thread, and each element is read and written once (one fused pass over memory).
- ``coef`` (T, K) float64: tensor t's hyper-parameters and step-dependent scalars (the
  column layout is the algorithm's, written by fastnorm.optim.functional).
- ``proto``: an empty array of the tensors' dtype (selects the specialisation).

Arithmetic follows torch.optim's single-tensor step op by op, in the tensors' dtype, with each
Python scalar rounded to that dtype as torch rounds it; where torch's vectorized CPU kernels
fuse a multiply-add (``add(alpha=)``, ``addcmul``, ``lerp``) we call an explicit fused
multiply-add (``fma``: llvm.fma; the cython backend calls C's fma), so both backends agree bit
for bit and agree with torch except where torch's SLEEF sqrt is not correctly rounded (1 ulp).
No other contraction happens (numba does not contract without fastmath).
"""
import numpy as np
from numba import carray, njit, prange, types
from numba.extending import intrinsic

_OPTS = dict(cache=True, nogil=True, error_model="numpy", boundscheck=False)


@intrinsic
def fma(typingctx, a, b, c):
    """a * b + c rounded once (llvm.fma), as torch's vectorized kernels compute it."""
    if not (isinstance(a, types.Float) and a == b == c):
        return None

    def codegen(context, builder, signature, args):
        return builder.fma(*args)

    return a(a, b, c), codegen


@intrinsic
def _address_as_pointer(typingctx, address, proto):
    ptrty = types.CPointer(proto.dtype)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(ptrty))

    return ptrty(address, proto), codegen


@njit(inline="always", **_OPTS)
def _view(ptrs, chunk, slot, proto):
    """The chunk's elements of slot ``slot`` of its tensor, as a 1-d array."""
    start = chunk[1]
    return carray(_address_as_pointer(ptrs[chunk[0], slot] + start * proto.itemsize, proto),
                  chunk[2] - start)


@njit(inline="always", **_OPTS)
def _lerp(a, b, w, one_minus_w, small):
    """torch.lerp(a, b, w) as its vectorized CPU kernel computes it (``small``: |w| < 0.5)."""
    d = b - a
    return fma(w, d, a) if small else fma(-d, one_minus_w, b)


@njit(inline="always", **_OPTS)
def _nan_max(a, b):
    """torch.maximum: NaN when either is NaN."""
    return b if (b >= a or b != b) else a


# ---------------------------------------------------------------- SGD
# coef: lr, momentum, dampening, weight_decay, nesterov, maximize, first (no buffer yet)
# slots: param, grad, momentum_buffer

@njit(inline="always", **_OPTS)
def _sgd_chunk(ptrs, chunk, coef, proto):
    c = coef[chunk[0]]
    T = proto.dtype.type
    p = _view(ptrs, chunk, 0, proto)
    g = _view(ptrs, chunk, 1, proto)
    neg_lr, mom, one_m_damp, wd = T(-c[0]), T(c[1]), T(1.0 - c[2]), T(c[3])
    has_mom, has_wd = c[1] != 0.0, c[3] != 0.0
    nesterov, maximize, first = c[4] != 0.0, c[5] != 0.0, c[6] != 0.0
    if has_mom:
        buf = _view(ptrs, chunk, 2, proto)
    else:
        buf = p
    for i in range(p.shape[0]):
        d = -g[i] if maximize else g[i]
        if has_wd:
            d = fma(wd, p[i], d)
        if has_mom:
            b = d if first else fma(one_m_damp, d, buf[i] * mom)
            buf[i] = b
            d = fma(mom, b, d) if nesterov else b
        p[i] = fma(neg_lr, d, p[i])


@njit(**_OPTS)
def sgd_step_serial(ptrs, chunks, coef, proto):
    for k in range(chunks.shape[0]):
        _sgd_chunk(ptrs, chunks[k], coef, proto)


@njit(parallel=True, **_OPTS)
def sgd_step_parallel(ptrs, chunks, coef, proto):
    for k in prange(chunks.shape[0]):
        _sgd_chunk(ptrs, chunks[k], coef, proto)


# ---------------------------------------------------------------- Adagrad
# coef: clr (lr / (1 + (step - 1) * lr_decay)), weight_decay, eps, maximize
# slots: param, grad, sum

@njit(inline="always", **_OPTS)
def _adagrad_chunk(ptrs, chunk, coef, proto):
    c = coef[chunk[0]]
    T = proto.dtype.type
    p = _view(ptrs, chunk, 0, proto)
    g = _view(ptrs, chunk, 1, proto)
    s = _view(ptrs, chunk, 2, proto)
    neg_clr, wd, eps = T(-c[0]), T(c[1]), T(c[2])
    has_wd, maximize = c[1] != 0.0, c[3] != 0.0
    for i in range(p.shape[0]):
        d = -g[i] if maximize else g[i]
        if has_wd:
            d = fma(wd, p[i], d)
        acc = fma(d, d, s[i])
        s[i] = acc
        p[i] = p[i] + (neg_clr * d) / (np.sqrt(acc) + eps)


@njit(**_OPTS)
def adagrad_step_serial(ptrs, chunks, coef, proto):
    for k in range(chunks.shape[0]):
        _adagrad_chunk(ptrs, chunks[k], coef, proto)


@njit(parallel=True, **_OPTS)
def adagrad_step_parallel(ptrs, chunks, coef, proto):
    for k in prange(chunks.shape[0]):
        _adagrad_chunk(ptrs, chunks[k], coef, proto)


# ---------------------------------------------------------------- Adadelta
# coef: lr, rho, eps, weight_decay, maximize
# slots: param, grad, square_avg, acc_delta

@njit(inline="always", **_OPTS)
def _adadelta_chunk(ptrs, chunk, coef, proto):
    c = coef[chunk[0]]
    T = proto.dtype.type
    p = _view(ptrs, chunk, 0, proto)
    g = _view(ptrs, chunk, 1, proto)
    sq = _view(ptrs, chunk, 2, proto)
    acc = _view(ptrs, chunk, 3, proto)
    neg_lr, rho, one_m_rho, eps, wd = T(-c[0]), T(c[1]), T(1.0 - c[1]), T(c[2]), T(c[3])
    has_wd, maximize = c[3] != 0.0, c[4] != 0.0
    for i in range(p.shape[0]):
        d = -g[i] if maximize else g[i]
        if has_wd:
            d = fma(wd, p[i], d)
        s = fma(one_m_rho * d, d, sq[i] * rho)
        sq[i] = s
        delta = (np.sqrt(acc[i] + eps) / np.sqrt(s + eps)) * d
        acc[i] = fma(one_m_rho * delta, delta, acc[i] * rho)
        p[i] = fma(neg_lr, delta, p[i])


@njit(**_OPTS)
def adadelta_step_serial(ptrs, chunks, coef, proto):
    for k in range(chunks.shape[0]):
        _adadelta_chunk(ptrs, chunks[k], coef, proto)


@njit(parallel=True, **_OPTS)
def adadelta_step_parallel(ptrs, chunks, coef, proto):
    for k in prange(chunks.shape[0]):
        _adadelta_chunk(ptrs, chunks[k], coef, proto)


# ---------------------------------------------------------------- RMSprop
# coef: lr, alpha, eps, weight_decay, momentum, centered, maximize
# slots: param, grad, square_avg, grad_avg, momentum_buffer

@njit(inline="always", **_OPTS)
def _rmsprop_chunk(ptrs, chunk, coef, proto):
    c = coef[chunk[0]]
    T = proto.dtype.type
    p = _view(ptrs, chunk, 0, proto)
    g = _view(ptrs, chunk, 1, proto)
    sq = _view(ptrs, chunk, 2, proto)
    neg_lr, alpha, w, eps, wd, mom = T(-c[0]), T(c[1]), T(1.0 - c[1]), T(c[2]), T(c[3]), T(c[4])
    one_m_w = T(1.0) - w
    small = abs(w) < T(0.5)
    has_wd, has_mom, centered, maximize = c[3] != 0.0, c[4] > 0.0, c[5] != 0.0, c[6] != 0.0
    ga = _view(ptrs, chunk, 3, proto) if centered else p
    buf = _view(ptrs, chunk, 4, proto) if has_mom else p
    if not (has_wd or has_mom or centered):  # torch's default RMSprop, branch-free
        sign = T(-1.0) if maximize else T(1.0)
        for i in range(p.shape[0]):
            d = g[i] * sign
            s = fma(w * d, d, sq[i] * alpha)
            sq[i] = s
            p[i] = p[i] + (neg_lr * d) / (np.sqrt(s) + eps)
        return
    for i in range(p.shape[0]):
        d = -g[i] if maximize else g[i]
        if has_wd:
            d = fma(wd, p[i], d)
        s = fma(w * d, d, sq[i] * alpha)
        sq[i] = s
        if centered:
            a = _lerp(ga[i], d, w, one_m_w, small)
            ga[i] = a
            avg = np.sqrt(fma(-a, a, s)) + eps
        else:
            avg = np.sqrt(s) + eps
        if has_mom:
            b = buf[i] * mom + d / avg
            buf[i] = b
            p[i] = fma(neg_lr, b, p[i])
        else:
            p[i] = p[i] + (neg_lr * d) / avg


@njit(**_OPTS)
def rmsprop_step_serial(ptrs, chunks, coef, proto):
    for k in range(chunks.shape[0]):
        _rmsprop_chunk(ptrs, chunks[k], coef, proto)


@njit(parallel=True, **_OPTS)
def rmsprop_step_parallel(ptrs, chunks, coef, proto):
    for k in prange(chunks.shape[0]):
        _rmsprop_chunk(ptrs, chunks[k], coef, proto)


# ---------------------------------------------------------------- Adam / AdamW
# coef: lr, beta1, beta2, eps, weight_decay, decoupled, amsgrad, maximize,
#       step_size (lr / (1 - beta1^step)), bias_correction2_sqrt ((1 - beta2^step)^0.5)
# slots: param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq

@njit(inline="always", **_OPTS)
def _adam_chunk(ptrs, chunk, coef, proto):
    c = coef[chunk[0]]
    T = proto.dtype.type
    p = _view(ptrs, chunk, 0, proto)
    g = _view(ptrs, chunk, 1, proto)
    m = _view(ptrs, chunk, 2, proto)
    v = _view(ptrs, chunk, 3, proto)
    w1 = T(1.0 - c[1])
    one_m_w1 = T(1.0) - w1
    small = abs(w1) < T(0.5)
    beta2, w2, eps = T(c[2]), T(1.0 - c[2]), T(c[3])
    wd, decay = T(c[4]), T(1.0 - c[0] * c[4])
    neg_step_size, bc2_sqrt = T(-c[8]), T(c[9])
    has_wd, decoupled, amsgrad, maximize = c[4] != 0.0, c[5] != 0.0, c[6] != 0.0, c[7] != 0.0
    vmax = _view(ptrs, chunk, 4, proto) if amsgrad else v
    # branch-free loops for the cases without amsgrad (they vectorize): sign = -1 negates the
    # gradient exactly (maximize); decay is 1 without weight decay
    sign = T(-1.0) if maximize else T(1.0)
    if not amsgrad and (decoupled or not has_wd):
        for i in range(p.shape[0]):
            d = g[i] * sign
            x = p[i] * decay
            a = _lerp(m[i], d, w1, one_m_w1, small)
            m[i] = a
            s = fma(w2 * d, d, v[i] * beta2)
            v[i] = s
            p[i] = x + (neg_step_size * a) / (np.sqrt(s) / bc2_sqrt + eps)
        return
    if decoupled or not has_wd:  # amsgrad
        for i in range(p.shape[0]):
            d = g[i] * sign
            x = p[i] * decay
            a = _lerp(m[i], d, w1, one_m_w1, small)
            m[i] = a
            s = fma(w2 * d, d, v[i] * beta2)
            v[i] = s
            s = _nan_max(vmax[i], s)
            vmax[i] = s
            p[i] = x + (neg_step_size * a) / (np.sqrt(s) / bc2_sqrt + eps)
        return
    if not amsgrad:  # Adam's L2 penalty
        for i in range(p.shape[0]):
            x = p[i]
            d = fma(wd, x, g[i] * sign)
            a = _lerp(m[i], d, w1, one_m_w1, small)
            m[i] = a
            s = fma(w2 * d, d, v[i] * beta2)
            v[i] = s
            p[i] = x + (neg_step_size * a) / (np.sqrt(s) / bc2_sqrt + eps)
        return
    for i in range(p.shape[0]):
        d = -g[i] if maximize else g[i]
        x = p[i]
        if has_wd:
            if decoupled:
                x = x * decay
            else:
                d = fma(wd, x, d)
        a = _lerp(m[i], d, w1, one_m_w1, small)
        m[i] = a
        s = fma(w2 * d, d, v[i] * beta2)
        v[i] = s
        if amsgrad:
            s = _nan_max(vmax[i], s)
            vmax[i] = s
        p[i] = x + (neg_step_size * a) / (np.sqrt(s) / bc2_sqrt + eps)


@njit(**_OPTS)
def adam_step_serial(ptrs, chunks, coef, proto):
    for k in range(chunks.shape[0]):
        _adam_chunk(ptrs, chunks[k], coef, proto)


@njit(parallel=True, **_OPTS)
def adam_step_parallel(ptrs, chunks, coef, proto):
    for k in prange(chunks.shape[0]):
        _adam_chunk(ptrs, chunks[k], coef, proto)
