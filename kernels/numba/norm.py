"""Row-normalization loops (LayerNorm, RMSNorm) for Numba's CPU target.

Every function works on C-contiguous 2-D arrays: rows are the samples, columns the
normalized features. RMSNorm is LayerNorm with the mean fixed at 0 (``center=False``).

Determinism contract (shared with kernels/cython/norm.pyx, bit for bit):
- every row sum is taken in float64 over 32 interleaved lanes (lane j holds elements
  32k + j), combined lane-wise as v[j] = (l[j]+l[8+j])+(l[16+j]+l[24+j]) for j < 8, then
  ((v0+v1)+(v2+v3))+((v4+v5)+(v6+v7)), then the tail (n % 32 elements) added in order
  (kernels/numba/lanes.py emits it as LLVM vector code, kernels/cython/lanes.h with SIMD
  vector extensions; ``_combine`` below is the same order over a 32-element array);
- the column sums of the backward (dweight, dbias) are taken over fixed row chunks
  (``row_chunks(m)``, a function of the row count only), chunk partials added in order;
- no fused multiply-adds (Numba does not contract without fastmath).
"""
import numpy as np
from numba import njit, prange

from .lanes import lane_grad_pf, lane_grad_w_pf, lane_shifted, lane_sqdev, lane_sum, row_dx, row_scale

_OPTS = dict(cache=True, nogil=True, error_model="numpy", boundscheck=False)


@njit(inline="always", **_OPTS)
def row_chunks(m):
    """Number of row chunks (units of parallel work, and of the column sums' fixed order):
    a function of the row count alone."""
    return min(m, 256)


@njit(inline="always", **_OPTS)
def _scratch():
    """32 float64 lanes of per-thread scratch, padded so that two threads' scratch never shares
    a cache line (they are written on every element)."""
    return np.empty(32 + 16)[8:40]


@njit(inline="always", **_OPTS)
def lanes(n):
    """32, the lane count, for a row of n >= 32 elements, written so that LLVM cannot see the
    constant: numba compiles without SLP vectorization, so a 32-step lane loop that LLVM
    unrolls fully stays scalar, while one of unknown length is loop-vectorized (8 float64 per
    AVX-512 vector, same operations per lane: same bits); 2.3x faster row sums."""
    return min(32, n)


@njit(inline="always", **_OPTS)
def _combine(acc):
    """The fixed combination of 32 lanes: lane-wise (l[j]+l[8+j])+(l[16+j]+l[24+j]), then a tree."""
    v0 = (acc[0] + acc[8]) + (acc[16] + acc[24])
    v1 = (acc[1] + acc[9]) + (acc[17] + acc[25])
    v2 = (acc[2] + acc[10]) + (acc[18] + acc[26])
    v3 = (acc[3] + acc[11]) + (acc[19] + acc[27])
    v4 = (acc[4] + acc[12]) + (acc[20] + acc[28])
    v5 = (acc[5] + acc[13]) + (acc[21] + acc[29])
    v6 = (acc[6] + acc[14]) + (acc[22] + acc[30])
    v7 = (acc[7] + acc[15]) + (acc[23] + acc[31])
    return ((v0 + v1) + (v2 + v3)) + ((v4 + v5) + (v6 + v7))


@njit(inline="always", **_OPTS)
def shifted_moments(x):
    """(mean, m2 = n var) of a float32 row (n >= 1) in one pass: float64 sums s1, s2 of
    d = x - c and d^2, c = x[0]; mean = c + s1/n, m2 = s2 - s1 (s1/n) clamped at 0 (NaN
    kept). Also BatchNorm's float32 pieces (kernels/numba/batch.py); lanes.h's
    lanes_moments_f32. See _centered_stats for the accuracy."""
    n = x.shape[0]
    n32 = n - n % 32
    c = np.float64(x[0])
    s1, s2 = lane_shifted(x, c)
    for i in range(n32, n):
        d = x[i] - c
        s1 += d
        s2 += d * d
    dm = s1 / n
    q = s2 - s1 * dm
    return c + dm, 0.0 if q < 0.0 else q


@njit(inline="always", **_OPTS)
def _centered_stats(x, center, eps):
    """(mean, 1/sqrt(var + eps)) of one row (n >= 1); mean is 0 when not centering (RMS).

    A float32 LayerNorm row takes both moments in one pass, as sums of d = x - c and of d^2
    with the shift c = x[0] (shifted data, Chan et al. 1983): mean = c + s1/n,
    n var = s2 - s1 (s1/n), clamped at 0. d and d^2 are exact in float64 for float32 x, and
    the cancellation in s2 - s1^2/n is at most a factor (var + (mean - c)^2) / var <= n + 1
    (c is one of the row's values), so var keeps ~1e-12 relative accuracy even for
    |mean| = 10^6 std: one pass over the row instead of two. A float64 row takes two passes
    (the mean, then squared deviations): there d is not exact, and c + s1/n can be 1 ulp
    from the rounded mean, which float64 outputs would show. RMSNorm: the sum of x^2."""
    n = x.shape[0]
    n32 = n - n % 32
    mean = 0.0
    if center and x.itemsize == 8:
        s = lane_sum(x)
        for i in range(n32, n):
            s += x[i]
        mean = s / n
        q = lane_sqdev(x, mean)
        for i in range(n32, n):
            d = x[i] - mean
            q += d * d
    elif center:
        mean, q = shifted_moments(x)
    else:
        q = lane_sqdev(x, 0.0)
        for i in range(n32, n):
            d = x[i] - 0.0
            q += d * d
    return mean, 1.0 / np.sqrt(q / n + eps)


@njit(inline="always", **_OPTS)
def _forward_row(x, w, b, y, center, has_w, has_b, eps):
    """y of one row. No software prefetch of the next row (kernels/cython/norm.pyx has one):
    here it slowed a 1-thread 32768x1024 float32 LayerNorm from 263 to 339 ns per row."""
    mean, rstd = _centered_stats(x, center, eps)
    n = x.shape[0]
    # xhat in float64 (x - mean loses nothing), rounded to y's dtype, then the affine part in
    # that dtype, each step rounded: 8 elements per step in lanes.row_scale, the tail here
    # (y[i] holds the rounded value; reading x[i] first keeps y is x safe)
    row_scale(x, w, b, y, mean, rstd, has_w, has_b)
    for i in range(n - n % 8, n):
        y[i] = (x[i] - mean) * rstd
        if has_w:
            y[i] = y[i] * w[i]
        if has_b:
            y[i] = y[i] + b[i]
    return mean, rstd


@njit(**_OPTS)
def norm_forward_serial(x, w, b, y, mean, rstd, center, has_w, has_b, eps):
    # rows in one loop, not in row_chunks (the forward has no cross-row sums): a loop per chunk
    # cost ~90 ns per chunk, a quarter of a 1024-element row's time when chunks are single rows
    for r in range(x.shape[0]):
        mean[r], rstd[r] = _forward_row(x[r], w, b, y[r], center, has_w, has_b, eps)


@njit(parallel=True, **_OPTS)
def norm_forward_parallel(x, w, b, y, mean, rstd, center, has_w, has_b, eps):
    for r in prange(x.shape[0]):
        mean[r], rstd[r] = _forward_row(x[r], w, b, y[r], center, has_w, has_b, eps)


@njit(**_OPTS)
def norm_stats_serial(x, mean, rstd, center, eps):
    """mean, rstd of each row, as norm_forward computes them (no y): the backward's statistics
    when the caller has none."""
    for r in range(x.shape[0]):
        mean[r], rstd[r] = _centered_stats(x[r], center, eps)


@njit(parallel=True, **_OPTS)
def norm_stats_parallel(x, mean, rstd, center, eps):
    for r in prange(x.shape[0]):
        mean[r], rstd[r] = _centered_stats(x[r], center, eps)


@njit(inline="always", **_OPTS)
def _backward_row(dy, x, w, dx, mean, rstd, center, has_w, pdw, pdb, want_dw, want_db, ndy, nx):
    """dx of one row; adds dy*xhat to pdw and dy to pdb (float64 chunk partials).
    ``ndy``, ``nx``: the next row's dy and x, prefetched with this row's dx (for writing)
    during the sums pass, so that memory is already busy with the next row while the dx pass
    reads only L1 (no value changes); kernels/cython/lanes.h prefetches during the dx pass
    instead. The dx pass is lanes.row_dx (lanes_dx's vectors) and the last n % 8 elements."""
    n = x.shape[0]
    n32 = n - n % 32
    # sum(g) and sum(g * xhat), g = dy * w, over 32 lanes each
    if has_w:
        sg, sgx = lane_grad_w_pf(dy, w, x, dx, ndy, nx, mean, rstd)
    else:
        sg, sgx = lane_grad_pf(dy, x, dx, ndy, nx, mean, rstd)
    for i in range(n32, n):
        g = dy[i] * (w[i] if has_w else 1.0)
        sg += g
        sgx += g * ((x[i] - mean) * rstd)
    mg = sg / n if center else 0.0
    mgx = sgx / n
    row_dx(dy, w, x, dx, pdw, pdb, mean, rstd, mg, mgx, has_w, want_dw, want_db)  # 8 per step
    for i in range(n - n % 8, n):
        d = np.float64(dy[i])  # read before dx[i] is written: dx may be dy
        xhat = (x[i] - mean) * rstd
        g = d * (w[i] if has_w else 1.0)
        dx[i] = ((g - mg) - xhat * mgx) * rstd
        if want_dw:
            pdw[i] += d * xhat
        if want_db:
            pdb[i] += d


@njit(inline="always", **_OPTS)
def _backward_chunk(c, nchunks, dy, x, w, dx, mean, rstd, center, has_w, pdw, pdb, want_dw, want_db):
    """Rows of chunk c; their dy*xhat and dy are added to the partial rows pdw and pdb."""
    m = x.shape[0]
    for r in range(c * m // nchunks, (c + 1) * m // nchunks):
        nr = min(r + 1, m - 1)  # the next row (the last row prefetches itself: no-op)
        _backward_row(dy[r], x[r], w, dx[r], mean[r], rstd[r], center, has_w,
                      pdw, pdb, want_dw, want_db, dy[nr], x[nr])


@njit(inline="always", **_OPTS)
def _sum_chunks(p, out):
    """out[j] = sum over chunks c, in order, of p[c, j] (walked chunk by chunk: rows are contiguous)."""
    out[:] = 0.0
    for c in range(p.shape[0]):
        _add_chunk(p[c], out)


@njit(inline="always", **_OPTS)
def _add_chunk(p, out):
    """out += p: the column sums' step for one chunk's partial row p."""
    for j in range(out.shape[0]):
        out[j] += p[j]


@njit(inline="always", **_OPTS)
def _chunk_partials(m, n, want_dw, want_db):
    """(nchunks, dweight partials, dbias partials): one float64 row per chunk where wanted,
    uninitialized: each chunk zeroes its rows in the parallel loop (zeroing 2 x 256 rows
    here first, serially, cost ~1 ms of a 2-thread 4096x1024 backward's 3.9 ms)."""
    nchunks = row_chunks(m)
    return nchunks, np.empty((nchunks, n if want_dw else 0)), np.empty((nchunks, n if want_db else 0))


@njit(inline="always", **_OPTS)
def _finish_columns(pdw, pdb, dw, db, want_dw, want_db):
    if want_dw:
        _sum_chunks(pdw, dw)
    if want_db:
        _sum_chunks(pdb, db)


# The serial/parallel pairs differ in range/prange alone; they stay two functions because
# numba's disk cache keys on the function, so one body compiled both ways would collide.
@njit(**_OPTS)
def norm_backward_serial(dy, x, w, dx, dw, db, mean, rstd, center, has_w, want_dw, want_db):
    # chunks in order, each chunk's partials added to dw/db as it ends: _sum_chunks' additions
    # in the same order, with one partial row instead of one per chunk (see kernels/cython)
    nchunks = row_chunks(x.shape[0])
    n = x.shape[1]
    pdw = np.zeros(n if want_dw else 0)
    pdb = np.zeros(n if want_db else 0)
    dw[:] = 0.0
    db[:] = 0.0
    for c in range(nchunks):
        _backward_chunk(c, nchunks, dy, x, w, dx, mean, rstd, center, has_w, pdw, pdb, want_dw, want_db)
        if want_dw:
            _add_chunk(pdw, dw)
            pdw[:] = 0.0
        if want_db:
            _add_chunk(pdb, db)
            pdb[:] = 0.0


@njit(parallel=True, **_OPTS)
def norm_backward_parallel(dy, x, w, dx, dw, db, mean, rstd, center, has_w, want_dw, want_db):
    nchunks, pdw, pdb = _chunk_partials(x.shape[0], x.shape[1], want_dw, want_db)
    for c in prange(nchunks):
        pdw[c, :] = 0.0  # each chunk zeroes its own partial rows, in parallel (see _chunk_partials)
        pdb[c, :] = 0.0
        _backward_chunk(c, nchunks, dy, x, w, dx, mean, rstd, center, has_w, pdw[c], pdb[c], want_dw,
                        want_db)
    _finish_columns(pdw, pdb, dw, db, want_dw, want_db)
