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
