"""LRN kernels for numba.cuda: one thread per (n, inner position) column, walking the channels
with the same O(1)-per-element window as the CPU kernels (kernels/numba/local.py: van Herk
suffix and prefix sums per block of ``size`` channels, no subtraction), in float64, the block
sums kept in global scratch arrays laid out (rows, columns) so that neighbouring threads touch
neighbouring addresses. Deterministic from run to run; not bitwise equal to the CPU backends
(NVVM contracts multiply-adds into FMAs and its pow/sqrt differ in the last bits).
Every load is converted to float64 before any arithmetic (the simulator follows NumPy's rules).
"""
import math

from numba import config, cuda, float64

from .norm import THREADS as ROW_THREADS, _block_sum

THREADS = 128
#: side of the square tiles of the cosine matmuls (TILE x TILE threads per block)
TILE = 8 if config.ENABLE_CUDASIM else 16


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


# ---------------------------------------------------------------- cosine normalization
# The products are a tiled shared-memory matmul accumulating in float64 in k order; the row
# norms are float64 sums on norm.py's block tree. Every division by a norm is by
# max(norm, eps), as on the CPU.


@cuda.jit
def row_norms(a, norms):
    """One block per row: norms[r] = sqrt(sum_k a[r, k]^2), float64."""
    buf = cuda.shared.array(ROW_THREADS, float64)
    r = cuda.blockIdx.x
    t = cuda.threadIdx.x
    s = 0.0
    for k in range(t, a.shape[1], ROW_THREADS):
        v = float64(a[r, k])
        s += v * v
    total = _block_sum(buf, t, s)
    if t == 0:
        norms[r] = math.sqrt(total)


@cuda.jit(device=True)
def _inv(nrm, eps):
    return 1.0 / (eps if nrm < eps else nrm)


@cuda.jit
def matmul(a, b, ta, tb, c):
    """c[i, j] = sum_k A[i, k] B[k, j], A = a (a.T when ``ta``), B = b (b.T when ``tb``):
    TILE x TILE blocks over c, k walked in shared-memory tiles, float64 sums in k order."""
    As = cuda.shared.array((TILE, TILE), float64)
    Bs = cuda.shared.array((TILE, TILE), float64)
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    i = cuda.blockIdx.y * TILE + ty
    j = cuda.blockIdx.x * TILE + tx
    m, n = c.shape
    K = a.shape[0] if ta else a.shape[1]
    s = 0.0
    for k0 in range(0, K, TILE):
        ka = k0 + tx  # A[i, ka] into As[ty, tx]
        if i < m and ka < K:
            As[ty, tx] = float64(a[ka, i]) if ta else float64(a[i, ka])
        else:
            As[ty, tx] = 0.0
        kb = k0 + ty  # B[kb, j] into Bs[ty, tx]
        if j < n and kb < K:
            Bs[ty, tx] = float64(b[j, kb]) if tb else float64(b[kb, j])
        else:
            Bs[ty, tx] = 0.0
        cuda.syncthreads()
        for k in range(TILE):
            s += As[ty, k] * Bs[k, tx]
        cuda.syncthreads()
    if i < m and j < n:
        c[i, j] = s


@cuda.jit
def cosine_scale(z, nx, nw, eps, y):
    """y[i, o] = z[i, o] * (1 / max(nx[i], eps) * 1 / max(nw[o], eps)) (the CPU's scale_outer)."""
    o, i = cuda.grid(2)
    if i < z.shape[0] and o < z.shape[1]:
        y[i, o] = z[i, o] * (_inv(nx[i], eps) * _inv(nw[o], eps))


@cuda.jit
def cosine_dy(dy, y, nx, nw, eps, a, b, trow):
    """One thread per row i: a = dy * rw, b = dy * rx (float64), trow[i] = sum_o dy * y."""
    i = cuda.grid(1)
    if i >= dy.shape[0]:
        return
    rx = _inv(nx[i], eps)
    t = 0.0
    for o in range(dy.shape[1]):
        d = float64(dy[i, o])
        a[i, o] = d * _inv(nw[o], eps)
        b[i, o] = d * rx
        t += d * y[i, o]
    trow[i] = t


@cuda.jit
def column_dots(dy, y, tcol):
    """One thread per column o: tcol[o] = sum_i dy[i, o] * y[i, o], rows in order."""
    o = cuda.grid(1)
    if o >= dy.shape[1]:
        return
    t = 0.0
    for i in range(dy.shape[0]):
        t += float64(dy[i, o]) * y[i, o]
    tcol[o] = t


@cuda.jit
def cosine_grad(g, a, norms, t, eps, out):
    """out[r, k] = r_r * g[r, k] - a[r, k] * [norm_r >= eps, > 0] r_r^2 t[r], r_r = 1/max(norm_r, eps):
    dx (rows of x) or dw (rows of w) of cosine_linear."""
    k, r = cuda.grid(2)
    if r < g.shape[0] and k < g.shape[1]:
        nrm = norms[r]
        inv = _inv(nrm, eps)
        coef = inv * inv if (nrm >= eps and nrm > 0.0) else 0.0
        out[r, k] = inv * g[r, k] - float64(a[r, k]) * (coef * t[r])
