"""Batch-statistics loops (BatchNorm, InstanceNorm, GroupNorm, moments) for Numba's CPU target.

Every array is C-contiguous; the data is viewed as x3 = (outer, C, inner) (no copy: NCHW is
(N, C, H*W), channels-last is (N*H*W, C, 1), GroupNorm is (N, G, C/G*H*W)). Statistics are
float64 partial moments (count, mean, m2) of fixed pieces, merged with Chan's formula in a
fixed order, so the result depends on the shape alone, never on the thread count.

Determinism contract (shared with kernels/cython/batch.pyx, bit for bit):
- "segment" pieces: each (o, c) segment of ``inner`` elements is cut into pieces of ``chunk``
  elements; a float32 piece's (mean, m2) come from one pass of 32-lane float64 sums of
  d = x - x[0] and d^2 (norm.shifted_moments), a float64 piece's mean is its 32-lane sum
  (kernels/numba/lanes.py, the order of lanes.h) over its length, its m2 the 32-lane sum of
  squared deviations;
  piece moments are stored at [o, piece, c];
- "column" pieces (small ``inner``, e.g. channels-last): blocks of ``rb`` rows; each column
  j = c * inner + i of a block is summed row by row in order (mean, then m2); stored at
  [block, i, c];
- ``merge_pieces`` merges the pieces of [g, :, c] in index order with Chan's formula::

      n = na + nb, d = mb - ma, mean = ma + d * (nb / n), m2 = (m2a + m2b) + d * d * (na * nb / n)

- gradient sums use the same pieces and plain sums in the same order;
- the elementwise passes compute in float64 and round once; no fused multiply-adds.
"""
import numpy as np
from numba import njit, prange

from .lanes import PREFETCH_MAX, col_grad32, col_moments32, lane_grad, lane_sqdev, lane_sum, prefetch_read
from .norm import shifted_moments

_OPTS = dict(cache=True, nogil=True, error_model="numpy", boundscheck=False)


@njit(inline="always", **_OPTS)
def _work_chunks(items):
    """Units of parallel work: a function of the item count alone."""
    return min(items, 256)


# ---------------------------------------------------------------- segment pieces


@njit(inline="always", **_OPTS)
def _piece_moments(x, nxt):
    """(mean, m2) of a contiguous 1-D piece: float32 in one pass of shifted sums
    (norm.shifted_moments); float64 as the 32-lane sum, then the 32-lane squared deviations,
    ``nxt`` (the next piece, or an empty array) prefetched between the two passes, so that
    memory stays busy while the second reads L1 (no value changes)."""
    if x.itemsize == 4:
        return shifted_moments(x)
    n = x.shape[0]
    n32 = n - n % 32
    s = lane_sum(x)
    for i in range(n32, n):
        s += x[i]
    mean = s / n
    for i in range(0, min(nxt.shape[0], PREFETCH_MAX // nxt.itemsize), 64 // nxt.itemsize):
        prefetch_read(nxt, i)
    q = lane_sqdev(x, mean)
    for i in range(n32, n):
        d = x[i] - mean
        q += d * d
    return mean, q


@njit(inline="always", **_OPTS)
def _segment_moments_chunk(k, nk, x, chunk, pmean, pm2):
    outer, C, inner = x.shape
    npieces = pmean.shape[1]
    items = outer * C * npieces
    flat = x.reshape(-1)
    for it in range(k * items // nk, (k + 1) * items // nk):
        p = it % npieces
        oc = it // npieces
        o = oc // C
        c = oc % C
        start = p * chunk
        stop = min(inner, start + chunk)
        # the next item's piece starts where this one ends (pieces tile the segments, the
        # segments tile x)
        end = oc * inner + stop
        pmean[o, p, c], pm2[o, p, c] = _piece_moments(x[o, c, start:stop], flat[end:end + chunk])


@njit(**_OPTS)
def segment_moments_serial(x, chunk, pmean, pm2):
    nk = _work_chunks(x.shape[0] * x.shape[1] * pmean.shape[1])
    for k in range(nk):
        _segment_moments_chunk(k, nk, x, chunk, pmean, pm2)


@njit(parallel=True, **_OPTS)
def segment_moments_parallel(x, chunk, pmean, pm2):
    nk = _work_chunks(x.shape[0] * x.shape[1] * pmean.shape[1])
    for k in prange(nk):
        _segment_moments_chunk(k, nk, x, chunk, pmean, pm2)


@njit(inline="always", **_OPTS)
def _piece_grad_sums(dy, x, mean, rstd):
    """(sum dy, sum dy * ((x - mean) * rstd)) of a piece, 32 lanes each (lanes.h's grad order)."""
    n = x.shape[0]
    n32 = n - n % 32
    sg, sgx = lane_grad(dy, x, mean, rstd)
    for i in range(n32, n):
        g = np.float64(dy[i])
        sg += g
        sgx += g * ((x[i] - mean) * rstd)
    return sg, sgx


@njit(inline="always", **_OPTS)
def _segment_grad_chunk(k, nk, dy, x, mean, rstd, chunk, psg, psgx):
    outer, C, inner = x.shape
    npieces = psg.shape[1]
    items = outer * C * npieces
    po = 1 if mean.shape[0] > 1 else 0
    for it in range(k * items // nk, (k + 1) * items // nk):
        p = it % npieces
        oc = it // npieces
        o = oc // C
        c = oc % C
        start = p * chunk
        stop = min(inner, start + chunk)
        psg[o, p, c], psgx[o, p, c] = _piece_grad_sums(
            dy[o, c, start:stop], x[o, c, start:stop], mean[o * po, c], rstd[o * po, c])


@njit(**_OPTS)
def segment_grad_sums_serial(dy, x, mean, rstd, chunk, psg, psgx):
    nk = _work_chunks(x.shape[0] * x.shape[1] * psg.shape[1])
    for k in range(nk):
        _segment_grad_chunk(k, nk, dy, x, mean, rstd, chunk, psg, psgx)


@njit(parallel=True, **_OPTS)
def segment_grad_sums_parallel(dy, x, mean, rstd, chunk, psg, psgx):
    nk = _work_chunks(x.shape[0] * x.shape[1] * psg.shape[1])
    for k in prange(nk):
        _segment_grad_chunk(k, nk, dy, x, mean, rstd, chunk, psg, psgx)


# ---------------------------------------------------------------- column pieces
# (``work``: the cython backend's scratch, unused here: numba allocates per block)


@njit(inline="always", **_OPTS)
def _column_moments_block(b, x, rb, pmean, pm2):
    """Block b's columns, each summed row by row: the mean, then the squared deviations (32
    columns at a time in registers, lanes.col_moments32; the rest one by one), prefetching the
    next block along the first tile."""
    outer, C, inner = x.shape
    ncols = C * inner
    flat = x.reshape(-1)
    r0 = b * rb
    r1 = min(outer, r0 + rb)
    rows = r1 - r0
    blk = flat[r0 * ncols:r1 * ncols]
    nxt = flat[r1 * ncols:min(outer, r1 + rb) * ncols]
    lines = (nxt.shape[0] * nxt.itemsize // (2 * rows) + 63) // 64
    s = np.empty(ncols)
    q = np.empty(ncols)
    n32 = ncols - ncols % 32
    for j in range(0, n32, 32):
        col_moments32(blk, rows, ncols, j, s, q, nxt, lines if j == 0 else 0)
    for j in range(n32, ncols):
        a = 0.0
        for r in range(rows):
            a += blk[r * ncols + j]
        m = a / rows
        s[j] = m
        a = 0.0
        for r in range(rows):
            d = blk[r * ncols + j] - m
            a += d * d
        q[j] = a
    for c in range(C):
        for i in range(inner):
            pmean[b, i, c] = s[c * inner + i]
            pm2[b, i, c] = q[c * inner + i]


@njit(**_OPTS)
def column_moments_serial(x, rb, pmean, pm2, work):
    for b in range(pmean.shape[0]):
        _column_moments_block(b, x, rb, pmean, pm2)


@njit(parallel=True, **_OPTS)
def column_moments_parallel(x, rb, pmean, pm2, work):
    for b in prange(pmean.shape[0]):
        _column_moments_block(b, x, rb, pmean, pm2)


@njit(inline="always", **_OPTS)
def _column_grad_block(b, dy, x, mean, rstd, rb, psg, psgx):
    """Block b's columns, each summed row by row (32 columns at a time in registers,
    lanes.col_grad32; the rest one by one), prefetching the next block along the first tile."""
    outer, C, inner = x.shape
    ncols = C * inner
    r0 = b * rb
    r1 = min(outer, r0 + rb)
    rows = r1 - r0
    r2 = min(outer, r1 + rb)
    blk = x.reshape(-1)[r0 * ncols:r1 * ncols]
    dblk = dy.reshape(-1)[r0 * ncols:r1 * ncols]
    nx = x.reshape(-1)[r1 * ncols:r2 * ncols]  # the next block, prefetched along the first tile
    ndy = dy.reshape(-1)[r1 * ncols:r2 * ncols]
    lines = (nx.shape[0] * nx.itemsize // rows + 63) // 64
    mu = np.empty(ncols)
    rs = np.empty(ncols)
    for j in range(ncols):
        mu[j] = mean[0, j // inner]
        rs[j] = rstd[0, j // inner]
    sg = np.empty(ncols)
    sgx = np.empty(ncols)
    n32 = ncols - ncols % 32
    for j in range(0, n32, 32):
        col_grad32(dblk, blk, rows, ncols, j, mu, rs, sg, sgx, ndy, nx, lines if j == 0 else 0)
    for j in range(n32, ncols):
        a = 0.0
        e = 0.0
        for r in range(rows):
            g = np.float64(dblk[r * ncols + j])
            a += g
            e += g * ((blk[r * ncols + j] - mu[j]) * rs[j])
        sg[j] = a
        sgx[j] = e
    for c in range(C):
        for i in range(inner):
            psg[b, i, c] = sg[c * inner + i]
            psgx[b, i, c] = sgx[c * inner + i]


@njit(**_OPTS)
def column_grad_sums_serial(dy, x, mean, rstd, rb, psg, psgx, work):
    for b in range(psg.shape[0]):
        _column_grad_block(b, dy, x, mean, rstd, rb, psg, psgx)


@njit(parallel=True, **_OPTS)
def column_grad_sums_parallel(dy, x, mean, rstd, rb, psg, psgx, work):
    for b in prange(psg.shape[0]):
        _column_grad_block(b, dy, x, mean, rstd, rb, psg, psgx)


# ---------------------------------------------------------------- merging pieces


@njit(inline="always", **_OPTS)
def _merge_one(g, c, cnt, pmean, pm2, mean, m2):
    na = 0.0
    ma = 0.0
    qa = 0.0
    for k in range(cnt.shape[0]):
        nb = cnt[k]
        mb = pmean[g, k, c]
        qb = pm2[g, k, c]
        if na == 0.0:
            na, ma, qa = nb, mb, qb
        else:
            n = na + nb
            d = mb - ma
            ma = ma + d * (nb / n)
            qa = (qa + qb) + d * d * (na * nb / n)
            na = n
    mean[g, c] = ma
    m2[g, c] = qa


@njit(**_OPTS)
def merge_pieces_serial(cnt, pmean, pm2, mean, m2):
    G, _, C = pmean.shape
    for gc in range(G * C):
        _merge_one(gc // C, gc % C, cnt, pmean, pm2, mean, m2)


@njit(parallel=True, **_OPTS)
def merge_pieces_parallel(cnt, pmean, pm2, mean, m2):
    G, _, C = pmean.shape
    for gc in prange(G * C):
        _merge_one(gc // C, gc % C, cnt, pmean, pm2, mean, m2)


@njit(inline="always", **_OPTS)
def _sum_one(g, c, p1, p2, s1, s2):
    a = 0.0
    b = 0.0
    for k in range(p1.shape[1]):
        a += p1[g, k, c]
        b += p2[g, k, c]
    s1[g, c] = a
    s2[g, c] = b


@njit(**_OPTS)
def sum_pieces_serial(p1, p2, s1, s2):
    G, _, C = p1.shape
    for gc in range(G * C):
        _sum_one(gc // C, gc % C, p1, p2, s1, s2)


@njit(parallel=True, **_OPTS)
def sum_pieces_parallel(p1, p2, s1, s2):
    G, _, C = p1.shape
    for gc in prange(G * C):
        _sum_one(gc // C, gc % C, p1, p2, s1, s2)


# ---------------------------------------------------------------- elementwise passes


@njit(inline="always", **_OPTS)
def _affine_segment(x, y, mu, sc, sh):
    for i in range(x.shape[0]):
        y[i] = (x[i] - mu) * sc + sh


@njit(inline="always", **_OPTS)
def _affine_row(o, x2, mean, scale, shift, y2):
    """Row o of channels-last data (inner == 1), x2/y2 = x/y viewed (outer, C) (contiguous
    rows: x[o, :, 0] would be a strided view, which numba does not vectorize):
    y[o, c] = (x - mean[c]) * scale[c] + shift[c]."""
    po = np.int64(o) * (mean.shape[0] > 1)  # (prange's index is unsigned: no mixed-sign select)
    xr = x2[o]
    yr = y2[o]
    mu = mean[po]
    sc = scale[po]
    sh = shift[po]
    for c in range(xr.shape[0]):
        yr[c] = (xr[c] - mu[c]) * sc[c] + sh[c]


@njit(**_OPTS)
def affine_apply_serial(x, mean, scale, shift, y):
    outer, C, inner = x.shape
    if inner == 1:
        x2 = x.reshape(outer, C)
        y2 = y.reshape(outer, C)
        for o in range(outer):
            _affine_row(o, x2, mean, scale, shift, y2)
        return
    po = 1 if mean.shape[0] > 1 else 0
    for oc in range(outer * C):
        o = oc // C
        c = oc % C
        _affine_segment(x[o, c], y[o, c], mean[o * po, c], scale[o * po, c], shift[o * po, c])


@njit(parallel=True, **_OPTS)
def affine_apply_parallel(x, mean, scale, shift, y):
    outer, C, inner = x.shape
    if inner == 1:
        x2 = x.reshape(outer, C)
        y2 = y.reshape(outer, C)
        for o in prange(outer):
            _affine_row(o, x2, mean, scale, shift, y2)
        return
    po = 1 if mean.shape[0] > 1 else 0
    for oc in prange(outer * C):
        o = oc // C
        c = oc % C
        _affine_segment(x[o, c], y[o, c], mean[o * po, c], scale[o * po, c], shift[o * po, c])


@njit(inline="always", **_OPTS)
def _grad_segment(dy, x, dx, mu, a, b, cc):
    for i in range(x.shape[0]):
        d = np.float64(dy[i])  # read before dx[i] is written: dx may be dy
        dx[i] = (a * d + b * (x[i] - mu)) + cc


@njit(inline="always", **_OPTS)
def _grad_row(o, dy2, x2, mean, A, B, Cc, dx2):
    """Row o of channels-last data, the arrays viewed (outer, C) (see ``_affine_row``)."""
    po = np.int64(o) * (mean.shape[0] > 1)
    dyr = dy2[o]
    xr = x2[o]
    dxr = dx2[o]
    mu = mean[po]
    a = A[po]
    b = B[po]
    cc = Cc[po]
    for c in range(xr.shape[0]):
        d = np.float64(dyr[c])
        dxr[c] = (a[c] * d + b[c] * (xr[c] - mu[c])) + cc[c]


@njit(**_OPTS)
def grad_apply_serial(dy, x, mean, A, B, Cc, dx):
    outer, C, inner = x.shape
    if inner == 1:
        dy2 = dy.reshape(outer, C)
        x2 = x.reshape(outer, C)
        dx2 = dx.reshape(outer, C)
        for o in range(outer):
            _grad_row(o, dy2, x2, mean, A, B, Cc, dx2)
        return
    po = 1 if mean.shape[0] > 1 else 0
    for oc in range(outer * C):
        o = oc // C
        c = oc % C
        q = o * po
        _grad_segment(dy[o, c], x[o, c], dx[o, c], mean[q, c], A[q, c], B[q, c], Cc[q, c])


@njit(parallel=True, **_OPTS)
def grad_apply_parallel(dy, x, mean, A, B, Cc, dx):
    outer, C, inner = x.shape
    if inner == 1:
        dy2 = dy.reshape(outer, C)
        x2 = x.reshape(outer, C)
        dx2 = dx.reshape(outer, C)
        for o in prange(outer):
            _grad_row(o, dy2, x2, mean, A, B, Cc, dx2)
        return
    po = 1 if mean.shape[0] > 1 else 0
    for oc in prange(outer * C):
        o = oc // C
        c = oc % C
        q = o * po
        _grad_segment(dy[o, c], x[o, c], dx[o, c], mean[q, c], A[q, c], B[q, c], Cc[q, c])


# ---------------------------------------------------------------- fused row normalization


@njit(inline="always", **_OPTS)
def _group_row(r, x, per, chunk, w, b, eps, y, mean, m2):
    """Row r = (n, g) of x (N, G, L): its statistics (the pieces and merge of
    ``segment_moments`` + ``merge_pieces``), then y for its ``per`` channels while the row is
    still in cache."""
    G = x.shape[1]
    L = x.shape[2]
    n = r // G
    g = r % G
    xr = x[n, g]
    yr = y[n, g]
    na = 0.0
    ma = 0.0
    qa = 0.0
    for start in range(0, L, chunk):
        stop = min(L, start + chunk)
        mb, qb = _piece_moments(xr[start:stop], xr[:0])
        nb = np.float64(stop - start)
        if na == 0.0:
            na, ma, qa = nb, mb, qb
        else:
            t = na + nb
            d = mb - ma
            ma = ma + d * (nb / t)
            qa = (qa + qb) + d * d * (na * nb / t)
            na = t
    mean[n, g] = ma
    m2[n, g] = qa
    invstd = 1.0 / np.sqrt(qa / L + eps)
    inner = L // per
    for j in range(per):
        c = g * per + j
        _affine_segment(xr[j * inner:(j + 1) * inner], yr[j * inner:(j + 1) * inner], ma,
                        invstd * w[c], b[c])


@njit(inline="always", **_OPTS)
def _group_chunk(k, nk, x, per, chunk, w, b, eps, y, mean, m2):
    rows = x.shape[0] * x.shape[1]
    for r in range(k * rows // nk, (k + 1) * rows // nk):
        _group_row(r, x, per, chunk, w, b, eps, y, mean, m2)


@njit(**_OPTS)
def group_forward_serial(x, per, chunk, w, b, eps, y, mean, m2):
    nk = _work_chunks(x.shape[0] * x.shape[1])
    for k in range(nk):
        _group_chunk(k, nk, x, per, chunk, w, b, eps, y, mean, m2)


@njit(parallel=True, **_OPTS)
def group_forward_parallel(x, per, chunk, w, b, eps, y, mean, m2):
    nk = _work_chunks(x.shape[0] * x.shape[1])
    for k in prange(nk):
        _group_chunk(k, nk, x, per, chunk, w, b, eps, y, mean, m2)


@njit(inline="always", **_OPTS)
def _group_grad_row(r, dy, x, per, chunk, w, mean, rstd, dx, s1, s2):
    """Row r = (n, g) of the InstanceNorm/GroupNorm backward with the row's own statistics:
    per-channel sums (pieces added in order from 0), the group's sums of w_c * those (channels
    in order), then dx = (A * dy + B * (x - mean)) + C for the row, still in cache."""
    G = x.shape[1]
    L = x.shape[2]
    n = r // G
    g = r % G
    inner = L // per
    mu = mean[n, g]
    rs = rstd[n, g]
    sg = 0.0
    sgx = 0.0
    for j in range(per):
        c = g * per + j
        a = 0.0
        b = 0.0
        for start in range(j * inner, (j + 1) * inner, chunk):
            stop = min((j + 1) * inner, start + chunk)
            pa, pb = _piece_grad_sums(dy[n, g, start:stop], x[n, g, start:stop], mu, rs)
            a += pa
            b += pb
        s1[n, c] = a
        s2[n, c] = b
        sg += a * w[c]
        sgx += b * w[c]
    mg = sg / L
    mgx = sgx / L
    bc = -rs * rs * mgx
    cc = -rs * mg
    for j in range(per):
        c = g * per + j
        lo = j * inner
        hi = lo + inner
        _grad_segment(dy[n, g, lo:hi], x[n, g, lo:hi], dx[n, g, lo:hi], mu, rs * w[c], bc, cc)


@njit(inline="always", **_OPTS)
def _group_grad_chunk(k, nk, dy, x, per, chunk, w, mean, rstd, dx, s1, s2):
    rows = x.shape[0] * x.shape[1]
    for r in range(k * rows // nk, (k + 1) * rows // nk):
        _group_grad_row(r, dy, x, per, chunk, w, mean, rstd, dx, s1, s2)


@njit(**_OPTS)
def group_backward_serial(dy, x, per, chunk, w, mean, rstd, dx, s1, s2):
    nk = _work_chunks(x.shape[0] * x.shape[1])
    for k in range(nk):
        _group_grad_chunk(k, nk, dy, x, per, chunk, w, mean, rstd, dx, s1, s2)


@njit(parallel=True, **_OPTS)
def group_backward_parallel(dy, x, per, chunk, w, mean, rstd, dx, s1, s2):
    nk = _work_chunks(x.shape[0] * x.shape[1])
    for k in prange(nk):
        _group_grad_chunk(k, nk, dy, x, per, chunk, w, mean, rstd, dx, s1, s2)
