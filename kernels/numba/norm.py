"""Row-normalization loops (LayerNorm, RMSNorm) for Numba's CPU target.

Every function works on C-contiguous 2-D arrays: rows are the samples, columns the
normalized features. RMSNorm is LayerNorm with the mean fixed at 0 (``center=False``).

Determinism contract (shared with kernels/cython/norm.pyx, bit for bit):
- every row sum is taken in float64 over 8 interleaved lanes (lane j holds elements
  8k + j), combined as ((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7)), then the tail added in order;
- the column sums of the backward (dweight, dbias) are taken over fixed row chunks
  (``row_chunks(m)``, a function of the row count only), chunk partials added in order;
- no fused multiply-adds (Numba does not contract without fastmath).
"""
import numpy as np
from numba import njit, prange

_OPTS = dict(cache=True, nogil=True, error_model="numpy", boundscheck=False)


@njit(inline="always", **_OPTS)
def row_chunks(m):
    """Number of row chunks for column sums: depends on the row count alone."""
    return min(m, 256)


@njit(inline="always", **_OPTS)
def _centered_stats(x, center, eps):
    """(mean, 1/sqrt(var + eps)) of one row; mean is 0 when not centering (RMS)."""
    n = x.shape[0]
    n8 = n - n % 8
    mean = 0.0
    if center:
        s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
        for i in range(0, n8, 8):
            s0 += x[i]
            s1 += x[i + 1]
            s2 += x[i + 2]
            s3 += x[i + 3]
            s4 += x[i + 4]
            s5 += x[i + 5]
            s6 += x[i + 6]
            s7 += x[i + 7]
        s = ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))
        for i in range(n8, n):
            s += x[i]
        mean = s / n
    q0 = q1 = q2 = q3 = q4 = q5 = q6 = q7 = 0.0
    for i in range(0, n8, 8):
        d0 = x[i] - mean
        d1 = x[i + 1] - mean
        d2 = x[i + 2] - mean
        d3 = x[i + 3] - mean
        d4 = x[i + 4] - mean
        d5 = x[i + 5] - mean
        d6 = x[i + 6] - mean
        d7 = x[i + 7] - mean
        q0 += d0 * d0
        q1 += d1 * d1
        q2 += d2 * d2
        q3 += d3 * d3
        q4 += d4 * d4
        q5 += d5 * d5
        q6 += d6 * d6
        q7 += d7 * d7
    q = ((q0 + q1) + (q2 + q3)) + ((q4 + q5) + (q6 + q7))
    for i in range(n8, n):
        d = x[i] - mean
        q += d * d
    return mean, 1.0 / np.sqrt(q / n + eps)


@njit(inline="always", **_OPTS)
def _forward_row(x, w, b, y, center, has_w, has_b, eps):
    mean, rstd = _centered_stats(x, center, eps)
    n = x.shape[0]
    if has_w and has_b:
        for i in range(n):
            y[i] = ((x[i] - mean) * rstd) * w[i] + b[i]
    elif has_w:
        for i in range(n):
            y[i] = ((x[i] - mean) * rstd) * w[i]
    else:
        for i in range(n):
            y[i] = (x[i] - mean) * rstd
    return mean, rstd


@njit(**_OPTS)
def norm_forward_serial(x, w, b, y, mean, rstd, center, has_w, has_b, eps):
    for r in range(x.shape[0]):
        mean[r], rstd[r] = _forward_row(x[r], w, b, y[r], center, has_w, has_b, eps)


@njit(parallel=True, **_OPTS)
def norm_forward_parallel(x, w, b, y, mean, rstd, center, has_w, has_b, eps):
    for r in prange(x.shape[0]):
        mean[r], rstd[r] = _forward_row(x[r], w, b, y[r], center, has_w, has_b, eps)


@njit(inline="always", **_OPTS)
def _backward_row(dy, x, w, dx, mean, rstd, center, has_w, pdw, pdb, want_dw, want_db):
    """dx of one row; adds dy*xhat to pdw and dy to pdb (float64 chunk partials)."""
    n = x.shape[0]
    n8 = n - n % 8
    # sum(g) and sum(g * xhat), g = dy * w, over 8 lanes each
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0.0
    c0 = c1 = c2 = c3 = c4 = c5 = c6 = c7 = 0.0
    for i in range(0, n8, 8):
        g0 = dy[i] * (w[i] if has_w else 1.0)
        g1 = dy[i + 1] * (w[i + 1] if has_w else 1.0)
        g2 = dy[i + 2] * (w[i + 2] if has_w else 1.0)
        g3 = dy[i + 3] * (w[i + 3] if has_w else 1.0)
        g4 = dy[i + 4] * (w[i + 4] if has_w else 1.0)
        g5 = dy[i + 5] * (w[i + 5] if has_w else 1.0)
        g6 = dy[i + 6] * (w[i + 6] if has_w else 1.0)
        g7 = dy[i + 7] * (w[i + 7] if has_w else 1.0)
        a0 += g0
        a1 += g1
        a2 += g2
        a3 += g3
        a4 += g4
        a5 += g5
        a6 += g6
        a7 += g7
        c0 += g0 * ((x[i] - mean) * rstd)
        c1 += g1 * ((x[i + 1] - mean) * rstd)
        c2 += g2 * ((x[i + 2] - mean) * rstd)
        c3 += g3 * ((x[i + 3] - mean) * rstd)
        c4 += g4 * ((x[i + 4] - mean) * rstd)
        c5 += g5 * ((x[i + 5] - mean) * rstd)
        c6 += g6 * ((x[i + 6] - mean) * rstd)
        c7 += g7 * ((x[i + 7] - mean) * rstd)
    sg = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))
    sgx = ((c0 + c1) + (c2 + c3)) + ((c4 + c5) + (c6 + c7))
    for i in range(n8, n):
        g = dy[i] * (w[i] if has_w else 1.0)
        sg += g
        sgx += g * ((x[i] - mean) * rstd)
    mg = sg / n if center else 0.0
    mgx = sgx / n
    for i in range(n):
        xhat = (x[i] - mean) * rstd
        g = dy[i] * (w[i] if has_w else 1.0)
        dx[i] = ((g - mg) - xhat * mgx) * rstd
        if want_dw:
            pdw[i] += dy[i] * xhat
        if want_db:
            pdb[i] += dy[i]


@njit(inline="always", **_OPTS)
def _backward_chunk(c, nchunks, dy, x, w, dx, mean, rstd, center, has_w, pdw, pdb, want_dw, want_db):
    m = x.shape[0]
    for r in range(c * m // nchunks, (c + 1) * m // nchunks):
        _backward_row(dy[r], x[r], w, dx[r], np.float64(mean[r]), np.float64(rstd[r]), center, has_w,
                      pdw[c], pdb[c], want_dw, want_db)


@njit(inline="always", **_OPTS)
def _sum_chunks(p, out):
    for j in range(out.shape[0]):
        s = 0.0
        for c in range(p.shape[0]):
            s += p[c, j]
        out[j] = s


@njit(**_OPTS)
def norm_backward_serial(dy, x, w, dx, dw, db, mean, rstd, center, has_w, want_dw, want_db):
    m, n = x.shape
    nchunks = row_chunks(m)
    pdw = np.zeros((nchunks, n if want_dw else 0))
    pdb = np.zeros((nchunks, n if want_db else 0))
    for c in range(nchunks):
        _backward_chunk(c, nchunks, dy, x, w, dx, mean, rstd, center, has_w, pdw, pdb, want_dw, want_db)
    if want_dw:
        _sum_chunks(pdw, dw)
    if want_db:
        _sum_chunks(pdb, db)


@njit(parallel=True, **_OPTS)
def norm_backward_parallel(dy, x, w, dx, dw, db, mean, rstd, center, has_w, want_dw, want_db):
    m, n = x.shape
    nchunks = row_chunks(m)
    pdw = np.zeros((nchunks, n if want_dw else 0))
    pdb = np.zeros((nchunks, n if want_db else 0))
    for c in prange(nchunks):
        _backward_chunk(c, nchunks, dy, x, w, dx, mean, rstd, center, has_w, pdw, pdb, want_dw, want_db)
    if want_dw:
        _sum_chunks(pdw, dw)
    if want_db:
        _sum_chunks(pdb, db)
