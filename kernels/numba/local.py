"""Local and parameter normalization loops (LRN, Lp/weight normalization) for Numba's CPU target.

Determinism contract (shared with kernels/cython/local.pyx, bit for bit):

LRN, on x viewed as (N, C, inner), one work unit per (n, tile of TILE inner positions):
- the channel window sums S_c = sum of x_j^2 (float64) over j in [c - lo, c - lo + size) with
  zeros outside [0, C) are taken by the van Herk / Gil-Werman scheme: the zero-padded channel
  axis is cut in blocks of ``size``; per block, suffix sums (right to left) and the next
  block's prefix sums (left to right); S_c = suffix[c] + prefix[c + size - 1] (suffix alone
  when c starts a block). Three adds per element whatever ``size``, no subtraction (so no
  cancellation, and an inf or NaN only reaches the windows that hold it);
- the factor D^-beta, D = k + (alpha / size) * S: with beta 0.75, 0.5 or 1 it is formed from
  sqrt and division (correctly rounded in IEEE), in the input's dtype; any other beta uses
  ``pow`` in float64 (glibc's, the same function both backends call), rounded to the dtype;
- the backward sums Q_c = dy_c * x_c * D_c^-beta / D_c over the mirrored window with the same
  scheme, in float64.
Lp / weight normalization, on x viewed as (outer, n, inner), reduced over n:
- inner == 1 (rows): p = 2 sums x^2 and the backward's dy * x over 32 interleaved float64
  lanes exactly as kernels/cython/lanes.h (lanes_sqdev with mean 0, lanes_grad), p = 1 and
  any other p over 32 lanes combined the same way, p = inf a running max (NaN sticks);
- inner > 1 (columns): each column sums over n in order, in float64.
No fused multiply-adds (Numba does not contract without fastmath).
"""
import numpy as np
from numba import njit, prange

from .lanes import lane_abs, lane_dot, lane_sqdev
from .norm import _combine, _scratch, lanes

_OPTS = dict(cache=True, nogil=True, error_model="numpy", boundscheck=False)

TILE = 256      # LRN: inner positions per work unit
COLS = 256     # Lp columns path: inner positions per work unit


@njit(inline="always", **_OPTS)
def n_chunks(units):
    """Units of parallel work are grouped into this many chunks (scratch is per chunk)."""
    return min(units, 256)


# ---------------------------------------------------------------- LRN


@njit(inline="always", **_OPTS)
def _suf_first(out, s, square, t1):
    if square:
        for t in range(t1):
            v = np.float64(s[t])
            out[t] = v * v
    else:
        for t in range(t1):
            out[t] = np.float64(s[t])


@njit(inline="always", **_OPTS)
def _suf_add(out, s, prev, square, t1):
    """out = v(s) + prev (suffix step)."""
    if square:
        for t in range(t1):
            v = np.float64(s[t])
            out[t] = v * v + prev[t]
    else:
        for t in range(t1):
            out[t] = np.float64(s[t]) + prev[t]


@njit(inline="always", **_OPTS)
def _pre_add(out, prev, s, square, t1):
    """out = prev + v(s) (prefix step)."""
    if square:
        for t in range(t1):
            v = np.float64(s[t])
            out[t] = prev[t] + v * v
    else:
        for t in range(t1):
            out[t] = prev[t] + np.float64(s[t])


@njit(inline="always", **_OPTS)
def _block(src, off, square, base, C, lo, size, t1, suf, pre):
    """Suffix sums of the block [base, base + size) of the zero-padded channel axis (right to
    left) into suf, prefix sums of the next block's first size - 1 positions into pre;
    padded position q holds v(q - lo, t), v(r, t) = src[r, off + t] (squared in float64 when
    ``square``), zero outside [0, C)."""
    for j in range(size - 1, -1, -1):
        r = base + j - lo
        out = suf[j]
        if 0 <= r < C:
            s = src[r, off:off + t1]
            if j == size - 1:
                _suf_first(out, s, square, t1)
            else:
                _suf_add(out, s, suf[j + 1], square, t1)
        elif j == size - 1:
            out[:t1] = 0.0
        else:
            out[:t1] = suf[j + 1, :t1]
    for j in range(size - 1):
        r = base + size + j - lo
        out = pre[j]
        if 0 <= r < C:
            s = src[r, off:off + t1]
            if j == 0:
                _suf_first(out, s, square, t1)
            else:
                _pre_add(out, pre[j - 1], s, square, t1)
        elif j == 0:
            out[:t1] = 0.0
        else:
            out[:t1] = pre[j - 1, :t1]


@njit(inline="always", **_OPTS)
def _window_row(j, t1, suf, pre, d):
    """d[t] = the window sum of the channel at position j of the block: suffix + prefix."""
    a = suf[j]
    if j == 0:
        for t in range(t1):
            d[t] = a[t]
    else:
        b = pre[j - 1]
        for t in range(t1):
            d[t] = a[t] + b[t]


@njit(inline="always", **_OPTS)
def _window_sum(src, off, square, dst, C, lo, size, t1, suf, pre):
    """dst[c, t] = sum over r in [c - lo, c - lo + size) of v(r, t) (see _block); t < t1."""
    base = 0
    while base < C:
        _block(src, off, square, base, C, lo, size, t1, suf, pre)
        for j in range(min(size, C - base)):
            _window_row(j, t1, suf, pre, dst[base + j])
        base += size


@njit(inline="always", **_OPTS)
def _lrn_scratch(C, size, dtype):
    return (np.empty((C, TILE)), np.empty((C, TILE)), np.empty((C, TILE)),
            np.empty((size, TILE)), np.empty((size, TILE)), np.empty(TILE, dtype))


@njit(**_OPTS)
def _lrn_forward_chunk(ch, nchunks, x, y, size, lo, a, k, beta, mode, one):
    N, C, inner = x.shape
    ntiles = (inner + TILE - 1) // TILE
    units = N * ntiles
    Sc, _, _, suf, pre, Dt = _lrn_scratch(1, size, x.dtype)
    Sc = Sc[0]
    for u in range(ch * units // nchunks, (ch + 1) * units // nchunks):
        n = u // ntiles
        i0 = (u % ntiles) * TILE
        t1 = min(TILE, inner - i0)
        xn = x[n]
        yn = y[n]
        base = 0
        while base < C:
            _block(xn, i0, True, base, C, lo, size, t1, suf, pre)
            for j in range(min(size, C - base)):
                c = base + j
                _window_row(j, t1, suf, pre, Sc)
                xr = xn[c, i0:i0 + t1]
                yr = yn[c, i0:i0 + t1]
                for t in range(t1):
                    Dt[t] = k + a * Sc[t]  # rounded to the input's dtype
                if mode == 1:
                    for t in range(t1):
                        s = np.sqrt(Dt[t])
                        yr[t] = xr[t] * (one / (s * np.sqrt(s)))
                elif mode == 2:
                    for t in range(t1):
                        yr[t] = xr[t] * (one / np.sqrt(Dt[t]))
                elif mode == 3:
                    for t in range(t1):
                        yr[t] = xr[t] * (one / Dt[t])
                else:
                    for t in range(t1):
                        Dt[t] = (k + a * Sc[t]) ** (-beta)  # float64 pow, rounded to the dtype
                    for t in range(t1):
                        yr[t] = xr[t] * Dt[t]
            base += size


@njit(**_OPTS)
def lrn_forward_serial(x, y, size, lo, a, k, beta, mode, one):
    nchunks = n_chunks(x.shape[0] * ((x.shape[2] + TILE - 1) // TILE))
    for ch in range(nchunks):
        _lrn_forward_chunk(ch, nchunks, x, y, size, lo, a, k, beta, mode, one)


@njit(parallel=True, **_OPTS)
def lrn_forward_parallel(x, y, size, lo, a, k, beta, mode, one):
    nchunks = n_chunks(x.shape[0] * ((x.shape[2] + TILE - 1) // TILE))
    for ch in prange(nchunks):
        _lrn_forward_chunk(ch, nchunks, x, y, size, lo, a, k, beta, mode, one)


@njit(inline="always", **_OPTS)
def _invpow64(d, beta, mode):
    """d^-beta in float64 (sqrt/division for the common betas, pow otherwise)."""
    if mode == 1:
        s = np.sqrt(d)
        return 1.0 / (s * np.sqrt(s))
    if mode == 2:
        return 1.0 / np.sqrt(d)
    if mode == 3:
        return 1.0 / d
    return d ** (-beta)


@njit(inline="always", **_OPTS)
def _grad_terms(Sc, Qc, xr, dyr, t1, k, a, beta, mode):
    """With d = k + a * S (the window sums) and p = d^-beta: Q = dy * (x * p) / d, S = dy * p."""
    for t in range(t1):
        d = k + a * Sc[t]
        p = _invpow64(d, beta, mode)
        g = np.float64(dyr[t])
        Qc[t] = (g * (np.float64(xr[t]) * p)) / d
        Sc[t] = g * p


@njit(**_OPTS)
def _lrn_backward_chunk(ch, nchunks, dy, x, dx, size, lo, a, k, beta, mode):
    N, C, inner = x.shape
    ntiles = (inner + TILE - 1) // TILE
    units = N * ntiles
    S, Q, B, suf, pre, _ = _lrn_scratch(C, size, x.dtype)
    c2 = 2.0 * a * beta
    for u in range(ch * units // nchunks, (ch + 1) * units // nchunks):
        n = u // ntiles
        i0 = (u % ntiles) * TILE
        t1 = min(TILE, inner - i0)
        xn = x[n]
        dyn = dy[n]
        dxn = dx[n]
        _window_sum(xn, i0, True, S, C, lo, size, t1, suf, pre)
        for c in range(C):
            # one loop per mode (a constant in each: the loop is branch-free and vectorizes)
            if mode == 1:
                _grad_terms(S[c], Q[c], xn[c, i0:i0 + t1], dyn[c, i0:i0 + t1], t1, k, a, beta, 1)
            elif mode == 2:
                _grad_terms(S[c], Q[c], xn[c, i0:i0 + t1], dyn[c, i0:i0 + t1], t1, k, a, beta, 2)
            elif mode == 3:
                _grad_terms(S[c], Q[c], xn[c, i0:i0 + t1], dyn[c, i0:i0 + t1], t1, k, a, beta, 3)
            else:
                _grad_terms(S[c], Q[c], xn[c, i0:i0 + t1], dyn[c, i0:i0 + t1], t1, k, a, beta, 0)
        # x_i is in the window of c exactly when c is in i's mirrored window
        _window_sum(Q, 0, False, B, C, size - 1 - lo, size, t1, suf, pre)
        for c in range(C):
            Sc = S[c]
            Bc = B[c]
            xr = xn[c, i0:i0 + t1]
            dxr = dxn[c, i0:i0 + t1]
            for t in range(t1):
                dxr[t] = Sc[t] - (c2 * np.float64(xr[t])) * Bc[t]


@njit(**_OPTS)
def lrn_backward_serial(dy, x, dx, size, lo, a, k, beta, mode):
    nchunks = n_chunks(x.shape[0] * ((x.shape[2] + TILE - 1) // TILE))
    for ch in range(nchunks):
        _lrn_backward_chunk(ch, nchunks, dy, x, dx, size, lo, a, k, beta, mode)


@njit(parallel=True, **_OPTS)
def lrn_backward_parallel(dy, x, dx, size, lo, a, k, beta, mode):
    nchunks = n_chunks(x.shape[0] * ((x.shape[2] + TILE - 1) // TILE))
    for ch in prange(nchunks):
        _lrn_backward_chunk(ch, nchunks, dy, x, dx, size, lo, a, k, beta, mode)


# ---------------------------------------------------------------- Lp norms (rows)
# mode: 2 (p = 2), 1 (p = 1), 3 (p = inf), 0 (any other p)


@njit(inline="always", **_OPTS)
def _row_sum(x, p, mode, acc):
    """sum |x|^p of a row in float64 over 32 lanes (the max of |x| for mode 3)."""
    n = x.shape[0]
    n32 = n - n % 32
    nl = lanes(n)
    if mode == 3:
        m = 0.0
        for i in range(n):
            v = abs(np.float64(x[i]))
            if v > m or v != v:
                m = v
        return m
    if mode == 2:
        s = lane_sqdev(x, 0.0)
    elif mode == 1:
        s = lane_abs(x)
    else:
        acc[:] = 0.0
        for i in range(0, n32, 32):
            for j in range(nl):
                acc[j] += abs(np.float64(x[i + j])) ** p
        s = _combine(acc)
    for i in range(n32, n):
        if mode == 2:
            d = x[i] - 0.0
            s += d * d
        elif mode == 1:
            s += abs(np.float64(x[i]))
        else:
            s += abs(np.float64(x[i])) ** p
    return s


@njit(inline="always", **_OPTS)
def _root(s, p, mode):
    """The norm from _row_sum's sum."""
    if mode == 2:
        return np.sqrt(s)
    if mode == 0:
        return s ** (1.0 / p)
    return s


@njit(inline="always", **_OPTS)
def _row_dot(dy, x):
    """sum dy * x in float64 over 32 lanes (lanes_grad's sgx with w absent, mean 0, rstd 1)."""
    n = x.shape[0]
    n32 = n - n % 32
    s = lane_dot(dy, x)
    for i in range(n32, n):
        s = s + np.float64(dy[i]) * ((x[i] - 0.0) * 1.0)
    return s


@njit(inline="always", **_OPTS)
def _clamp(nrm, eps):
    """max(nrm, eps), NaN kept (torch's clamp_min)."""
    return eps if nrm < eps else nrm


@njit(**_OPTS)
def _lp_rows_chunk(ch, nchunks, x, g, y, norms, p, mode, eps, has_g, write_y):
    m = x.shape[0]
    acc = _scratch()
    for r in range(ch * m // nchunks, (ch + 1) * m // nchunks):
        nrm = _root(_row_sum(x[r], p, mode, acc), p, mode)
        norms[r] = nrm
        if write_y:
            f = (g[r] if has_g else 1.0) / _clamp(nrm, eps)
            xr = x[r]
            yr = y[r]
            for i in range(x.shape[1]):
                yr[i] = xr[i] * f


@njit(**_OPTS)
def lp_rows_serial(x, g, y, norms, p, mode, eps, has_g, write_y):
    nchunks = n_chunks(x.shape[0])
    for ch in range(nchunks):
        _lp_rows_chunk(ch, nchunks, x, g, y, norms, p, mode, eps, has_g, write_y)


@njit(parallel=True, **_OPTS)
def lp_rows_parallel(x, g, y, norms, p, mode, eps, has_g, write_y):
    nchunks = n_chunks(x.shape[0])
    for ch in prange(nchunks):
        _lp_rows_chunk(ch, nchunks, x, g, y, norms, p, mode, eps, has_g, write_y)


@njit(inline="always", **_OPTS)
def _dnorm_scale(nrm, d, dot, p, mode, eps, gr, cnt):
    """The factor h of the backward's second term, dx = dy * gr / d - h * dN/dx-part (see
    _lp_grad): gr * dot / d^2 over the part of dN/dx that is constant in the row; 0 where the
    clamp holds (nrm < eps) or nrm == 0 (torch masks the 0/0)."""
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


@njit(inline="always", **_OPTS)
def _dnorm_part(v, nrm, p, mode):
    """dN/dx_i up to the row constant of _dnorm_scale, for v = x_i in float64."""
    if mode == 2:
        return v
    s = 1.0 if v > 0.0 else (-1.0 if v < 0.0 else 0.0)
    if mode == 1:
        return s
    if mode == 3:
        return s if abs(v) == nrm else 0.0
    return s * abs(v) ** (p - 1.0)


@njit(**_OPTS)
def _lp_rows_backward_chunk(ch, nchunks, dy, x, g, dx, norms, dots, p, mode, eps, has_g):
    m, n = x.shape
    acc = _scratch()
    for r in range(ch * m // nchunks, (ch + 1) * m // nchunks):
        xr = x[r]
        dyr = dy[r]
        dxr = dx[r]
        nrm = _root(_row_sum(xr, p, mode, acc), p, mode)
        dot = _row_dot(dyr, xr)
        norms[r] = nrm
        dots[r] = dot
        cnt = 0.0
        if mode == 3:
            for i in range(n):
                if abs(np.float64(xr[i])) == nrm:
                    cnt += 1.0
        gr = g[r] if has_g else 1.0
        d = _clamp(nrm, eps)
        f = gr / d
        h = _dnorm_scale(nrm, d, dot, p, mode, eps, gr, cnt)
        if mode == 2:
            for i in range(n):
                dxr[i] = np.float64(dyr[i]) * f - np.float64(xr[i]) * h
        else:
            for i in range(n):
                dxr[i] = np.float64(dyr[i]) * f - _dnorm_part(np.float64(xr[i]), nrm, p, mode) * h


@njit(**_OPTS)
def lp_rows_backward_serial(dy, x, g, dx, norms, dots, p, mode, eps, has_g):
    nchunks = n_chunks(x.shape[0])
    for ch in range(nchunks):
        _lp_rows_backward_chunk(ch, nchunks, dy, x, g, dx, norms, dots, p, mode, eps, has_g)


@njit(parallel=True, **_OPTS)
def lp_rows_backward_parallel(dy, x, g, dx, norms, dots, p, mode, eps, has_g):
    nchunks = n_chunks(x.shape[0])
    for ch in prange(nchunks):
        _lp_rows_backward_chunk(ch, nchunks, dy, x, g, dx, norms, dots, p, mode, eps, has_g)


# ---------------------------------------------------------------- Lp norms (columns)


@njit(inline="always", **_OPTS)
def _col_norms(xo, i0, t1, p, mode, acc):
    """acc[t] = the p-norm over rows of column i0 + t of the (n, inner) slab xo, rows in order."""
    n = xo.shape[0]
    for t in range(t1):
        acc[t] = 0.0
    for k in range(n):
        if mode == 2:
            for t in range(t1):
                v = np.float64(xo[k, i0 + t])
                acc[t] += v * v
        elif mode == 1:
            for t in range(t1):
                acc[t] += abs(np.float64(xo[k, i0 + t]))
        elif mode == 3:
            for t in range(t1):
                v = abs(np.float64(xo[k, i0 + t]))
                if v > acc[t] or v != v:
                    acc[t] = v
        else:
            for t in range(t1):
                acc[t] += abs(np.float64(xo[k, i0 + t])) ** p
    for t in range(t1):
        acc[t] = _root(acc[t], p, mode)


@njit(**_OPTS)
def _lp_cols_chunk(ch, nchunks, x, g, y, norms, p, mode, eps, has_g, write_y):
    outer, n, inner = x.shape
    nt = (inner + COLS - 1) // COLS
    units = outer * nt
    acc = np.empty(COLS)
    f = np.empty(COLS)
    for u in range(ch * units // nchunks, (ch + 1) * units // nchunks):
        o = u // nt
        i0 = (u % nt) * COLS
        t1 = min(COLS, inner - i0)
        xo = x[o]
        _col_norms(xo, i0, t1, p, mode, acc)
        for t in range(t1):
            norms[o, i0 + t] = acc[t]
            f[t] = (g[o, i0 + t] if has_g else 1.0) / _clamp(acc[t], eps)
        if write_y:
            yo = y[o]
            for k in range(n):
                for t in range(t1):
                    yo[k, i0 + t] = xo[k, i0 + t] * f[t]


@njit(**_OPTS)
def lp_cols_serial(x, g, y, norms, p, mode, eps, has_g, write_y):
    nchunks = n_chunks(x.shape[0] * ((x.shape[2] + COLS - 1) // COLS))
    for ch in range(nchunks):
        _lp_cols_chunk(ch, nchunks, x, g, y, norms, p, mode, eps, has_g, write_y)


@njit(parallel=True, **_OPTS)
def lp_cols_parallel(x, g, y, norms, p, mode, eps, has_g, write_y):
    nchunks = n_chunks(x.shape[0] * ((x.shape[2] + COLS - 1) // COLS))
    for ch in prange(nchunks):
        _lp_cols_chunk(ch, nchunks, x, g, y, norms, p, mode, eps, has_g, write_y)


@njit(**_OPTS)
def _lp_cols_backward_chunk(ch, nchunks, dy, x, g, dx, norms, dots, p, mode, eps, has_g):
    outer, n, inner = x.shape
    nt = (inner + COLS - 1) // COLS
    units = outer * nt
    acc = np.empty(COLS)
    dt = np.empty(COLS)
    cnt = np.empty(COLS)
    f = np.empty(COLS)
    h = np.empty(COLS)
    for u in range(ch * units // nchunks, (ch + 1) * units // nchunks):
        o = u // nt
        i0 = (u % nt) * COLS
        t1 = min(COLS, inner - i0)
        xo = x[o]
        dyo = dy[o]
        dxo = dx[o]
        _col_norms(xo, i0, t1, p, mode, acc)
        for t in range(t1):
            dt[t] = 0.0
            cnt[t] = 0.0
        for k in range(n):
            for t in range(t1):
                dt[t] += np.float64(dyo[k, i0 + t]) * np.float64(xo[k, i0 + t])
            if mode == 3:
                for t in range(t1):
                    if abs(np.float64(xo[k, i0 + t])) == acc[t]:
                        cnt[t] += 1.0
        for t in range(t1):
            nrm = acc[t]
            gr = g[o, i0 + t] if has_g else 1.0
            d = _clamp(nrm, eps)
            f[t] = gr / d
            h[t] = _dnorm_scale(nrm, d, dt[t], p, mode, eps, gr, cnt[t])
            norms[o, i0 + t] = nrm
            dots[o, i0 + t] = dt[t]
        for k in range(n):
            if mode == 2:
                for t in range(t1):
                    dxo[k, i0 + t] = np.float64(dyo[k, i0 + t]) * f[t] - np.float64(xo[k, i0 + t]) * h[t]
            else:
                for t in range(t1):
                    dxo[k, i0 + t] = (np.float64(dyo[k, i0 + t]) * f[t]
                                      - _dnorm_part(np.float64(xo[k, i0 + t]), acc[t], p, mode) * h[t])


@njit(**_OPTS)
def lp_cols_backward_serial(dy, x, g, dx, norms, dots, p, mode, eps, has_g):
    nchunks = n_chunks(x.shape[0] * ((x.shape[2] + COLS - 1) // COLS))
    for ch in range(nchunks):
        _lp_cols_backward_chunk(ch, nchunks, dy, x, g, dx, norms, dots, p, mode, eps, has_g)


@njit(parallel=True, **_OPTS)
def lp_cols_backward_parallel(dy, x, g, dx, norms, dots, p, mode, eps, has_g):
    nchunks = n_chunks(x.shape[0] * ((x.shape[2] + COLS - 1) // COLS))
    for ch in prange(nchunks):
        _lp_cols_backward_chunk(ch, nchunks, dy, x, g, dx, norms, dots, p, mode, eps, has_g)


# ---------------------------------------------------------------- cosine_linear's epilogue


@njit(inline="always", **_OPTS)
def _scale_outer_chunk(ch, nchunks, z, a, b, y):
    m = z.shape[0]
    for r in range(ch * m // nchunks, (ch + 1) * m // nchunks):
        ar = a[r]
        zr = z[r]
        yr = y[r]
        for j in range(z.shape[1]):
            yr[j] = zr[j] * (ar * b[j])


@njit(**_OPTS)
def scale_outer_serial(z, a, b, y):
    """y[i, j] = z[i, j] * (a[i] * b[j]) in float64, rounded to y's dtype."""
    nchunks = n_chunks(z.shape[0])
    for ch in range(nchunks):
        _scale_outer_chunk(ch, nchunks, z, a, b, y)


@njit(parallel=True, **_OPTS)
def scale_outer_parallel(z, a, b, y):
    nchunks = n_chunks(z.shape[0])
    for ch in prange(nchunks):
        _scale_outer_chunk(ch, nchunks, z, a, b, y)
