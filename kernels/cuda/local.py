"""LRN kernels for numba.cuda: one thread per (n, inner position) column, walking the channels
with the same O(1)-per-element window as the CPU kernels (kernels/numba/local.py: van Herk
suffix and prefix sums per block of ``size`` channels, no subtraction), in float64, the block
sums kept in global scratch arrays laid out (rows, columns) so that neighbouring threads touch
neighbouring addresses. Deterministic from run to run; not bitwise equal to the CPU backends
(NVVM contracts multiply-adds into FMAs and its pow/sqrt differ in the last bits).
Every load is converted to float64 before any arithmetic (the simulator follows NumPy's rules).
"""
import math

from numba import cuda, float64

THREADS = 128


@cuda.jit(device=True)
def _window(src, dst, col, C, lo, size, suf, pre):
    """dst[c, col] = sum of src[r, col] over r in [c - lo, c - lo + size) within [0, C)."""
    base = 0
    while base < C:
        for jj in range(size):
            j = size - 1 - jj
            r = base + j - lo
            v = src[r, col] if 0 <= r < C else 0.0
            suf[j, col] = v if j == size - 1 else v + suf[j + 1, col]
        for j in range(size - 1):
            r = base + size + j - lo
            v = src[r, col] if 0 <= r < C else 0.0
            pre[j, col] = v if j == 0 else pre[j - 1, col] + v
        for j in range(size):
            c = base + j
            if c < C:
                dst[c, col] = suf[j, col] if j == 0 else suf[j, col] + pre[j - 1, col]
        base += size


@cuda.jit(device=True)
def _invpow(d, beta, mode):
    if mode == 1:
        s = math.sqrt(d)
        return 1.0 / (s * math.sqrt(s))
    if mode == 2:
        return 1.0 / math.sqrt(d)
    if mode == 3:
        return 1.0 / d
    return d ** (-beta)


@cuda.jit
def lrn_forward(x, y, sq, S, suf, pre, size, lo, a, k, beta, mode):
    """y[n, c, i] = x[n, c, i] * (k + a * window sum of x^2)^-beta; x, y (N, C, inner);
    scratch sq, S (C, N * inner) and suf, pre (size, N * inner), float64."""
    col = cuda.grid(1)
    N, C, inner = x.shape
    if col >= N * inner:
        return
    n = col // inner
    i = col - n * inner
    for c in range(C):
        v = float64(x[n, c, i])
        sq[c, col] = v * v
    _window(sq, S, col, C, lo, size, suf, pre)
    for c in range(C):
        y[n, c, i] = float64(x[n, c, i]) * _invpow(k + a * S[c, col], beta, mode)


@cuda.jit
def lrn_backward(dy, x, dx, Q, S, B, suf, pre, size, lo, a, k, beta, mode):
    """dx of lrn_forward: dy * D^-beta - 2 a beta x * (mirrored window sum of dy x D^-beta / D)."""
    col = cuda.grid(1)
    N, C, inner = x.shape
    if col >= N * inner:
        return
    n = col // inner
    i = col - n * inner
    for c in range(C):
        v = float64(x[n, c, i])
        Q[c, col] = v * v
    _window(Q, S, col, C, lo, size, suf, pre)
    for c in range(C):
        d = k + a * S[c, col]
        p = _invpow(d, beta, mode)
        g = float64(dy[n, c, i])
        Q[c, col] = (g * (float64(x[n, c, i]) * p)) / d
        S[c, col] = g * p
    _window(Q, B, col, C, size - 1 - lo, size, suf, pre)
    c2 = 2.0 * a * beta
    for c in range(C):
        dx[n, c, i] = S[c, col] - (c2 * float64(x[n, c, i])) * B[c, col]


# ---------------------------------------------------------------- Lp and weight normalization
# x viewed as (outer, n, inner). lp_*: one thread per (o, i), reducing over n (the normalized
# axis); wn_*: one thread per index c of the middle axis, reducing over o and i (every axis
# but weight_norm's). Sums in float64 in order; mode 2 (p = 2), 1, 3 (inf), 0 (any p).


@cuda.jit(device=True)
def _acc(s, v, p, mode):
    """s updated with |v|: s + v^2, s + |v|, max (NaN sticks), s + |v|^p."""
    a = abs(v)
    if mode == 2:
        return s + a * a
    if mode == 1:
        return s + a
    if mode == 3:
        return a if (a > s or a != a) else s
    return s + a ** p


@cuda.jit(device=True)
def _root(s, p, mode):
    if mode == 2:
        return math.sqrt(s)
    if mode == 0:
        return s ** (1.0 / p)
    return s


@cuda.jit(device=True)
def _part(v, nrm, p, mode):
    """dN/dx up to the per-slice constant (see kernels/numba/local.py _dnorm_part)."""
    if mode == 2:
        return v
    s = 1.0 if v > 0.0 else (-1.0 if v < 0.0 else 0.0)
    if mode == 1:
        return s
    if mode == 3:
        return s if abs(v) == nrm else 0.0
    return s * abs(v) ** (p - 1.0)


@cuda.jit(device=True)
def _scale(nrm, d, dot, p, mode, eps, gr, cnt):
    if not nrm >= eps or nrm == 0.0:
        return 0.0
    h = gr * (dot / (d * d))
    if mode == 2:
        return h / nrm
    if mode == 0:
        return h / nrm ** (p - 1.0)
    if mode == 3:
        return h / cnt
    return h


@cuda.jit
def lp_forward(x, g, y, norms, p, mode, eps, has_g):
    """norms[o, i] = ||x[o, :, i]||_p; y = x * g[o, i] / max(norm, eps) (g = 1 without has_g)."""
    gi = cuda.grid(1)
    outer, n, inner = x.shape
    if gi >= outer * inner:
        return
    o = gi // inner
    i = gi - o * inner
    s = 0.0
    for k in range(n):
        s = _acc(s, float64(x[o, k, i]), p, mode)
    nrm = _root(s, p, mode)
    norms[o, i] = nrm
    d = eps if nrm < eps else nrm
    f = (g[o, i] if has_g else 1.0) / d
    for k in range(n):
        y[o, k, i] = float64(x[o, k, i]) * f


@cuda.jit
def lp_backward(dy, x, g, dx, norms, dots, p, mode, eps, has_g):
    """dx of lp_forward's y; norms and dots = sum dy * x per (o, i)."""
    gi = cuda.grid(1)
    outer, n, inner = x.shape
    if gi >= outer * inner:
        return
    o = gi // inner
    i = gi - o * inner
    s = 0.0
    dot = 0.0
    for k in range(n):
        v = float64(x[o, k, i])
        s = _acc(s, v, p, mode)
        dot += float64(dy[o, k, i]) * v
    nrm = _root(s, p, mode)
    cnt = 0.0
    if mode == 3:
        for k in range(n):
            if abs(float64(x[o, k, i])) == nrm:
                cnt += 1.0
    norms[o, i] = nrm
    dots[o, i] = dot
    gr = g[o, i] if has_g else 1.0
    d = eps if nrm < eps else nrm
    f = gr / d
    h = _scale(nrm, d, dot, p, mode, eps, gr, cnt)
    for k in range(n):
        v = float64(x[o, k, i])
        dx[o, k, i] = float64(dy[o, k, i]) * f - _part(v, nrm, p, mode) * h


@cuda.jit
def wn_forward(v, g, w):
    """w[:, c, :] = v[:, c, :] * g[c] / ||v[:, c, :]||, v viewed as (outer, C, inner)."""
    c = cuda.grid(1)
    outer, C, inner = v.shape
    if c >= C:
        return
    s = 0.0
    for o in range(outer):
        for i in range(inner):
            a = float64(v[o, c, i])
            s += a * a
    f = g[c] / math.sqrt(s)
    for o in range(outer):
        for i in range(inner):
            w[o, c, i] = float64(v[o, c, i]) * f


@cuda.jit
def wn_backward(dw, v, g, dv, dg):
    """dg[c] = (dw . v) / ||v||, dv = (g / ||v||) dw - (g dg / ||v||^2) v, per c."""
    c = cuda.grid(1)
    outer, C, inner = v.shape
    if c >= C:
        return
    s = 0.0
    dot = 0.0
    for o in range(outer):
        for i in range(inner):
            a = float64(v[o, c, i])
            s += a * a
            dot += float64(dw[o, c, i]) * a
    nrm = math.sqrt(s)
    d = dot / nrm
    dg[c] = d
    f = g[c] / nrm
    h = g[c] * d / (nrm * nrm)
    for o in range(outer):
        for i in range(inner):
            dv[o, c, i] = float64(dw[o, c, i]) * f - float64(v[o, c, i]) * h
