# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Batch-statistics loops (BatchNorm, InstanceNorm, GroupNorm, moments), Cython + OpenMP.

The same arithmetic, in the same order, as kernels/numba/batch.py (see its determinism
contract), so both backends agree bit for bit. Arguments are validated by fastnorm: x/dy/y/dx
C-contiguous (outer, C, inner) of one float dtype; statistics and partials float64.
"""
from cython.parallel cimport prange
cimport numpy as cnp

cnp.import_array()

ctypedef fused floating:
    float
    double


cdef extern from "lanes.h" nogil:
    double lanes_sum_f32(const float* x, Py_ssize_t n)
    double lanes_sum_f64(const double* x, Py_ssize_t n)
    double lanes_sqdev_f32(const float* x, Py_ssize_t n, double mean)
    double lanes_sqdev_f64(const double* x, Py_ssize_t n, double mean)
    void lanes_prefetch_bytes(const void* p, Py_ssize_t nbytes)
    void lanes_moments_f32(const float* x, Py_ssize_t n, double* mean, double* m2)
    void cols_moments_f32(const float* x, Py_ssize_t rows, Py_ssize_t ncols, double* s, double* q,
                          const void* nxt, Py_ssize_t next_bytes)
    void cols_moments_f64(const double* x, Py_ssize_t rows, Py_ssize_t ncols, double* s, double* q,
                          const void* nxt, Py_ssize_t next_bytes)
    void cols_grad_f32(const float* dy, const float* x, Py_ssize_t rows, Py_ssize_t ncols,
                       const double* mu, const double* rs, double* s1, double* s2,
                       const void* ndy, const void* nx, Py_ssize_t next_bytes)
    void cols_grad_f64(const double* dy, const double* x, Py_ssize_t rows, Py_ssize_t ncols,
                       const double* mu, const double* rs, double* s1, double* s2,
                       const void* ndy, const void* nx, Py_ssize_t next_bytes)
    void lanes_grad_f32(const float* dy, const float* w, const float* x, Py_ssize_t n,
                        double mean, double rstd, double* sg, double* sgx)
    void lanes_grad_f64(const double* dy, const double* w, const double* x, Py_ssize_t n,
                        double mean, double rstd, double* sg, double* sgx)


cdef inline Py_ssize_t _min(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return a if a < b else b


# ---------------------------------------------------------------- segment pieces


cdef inline void _piece(const floating* x, Py_ssize_t n, double* mean, double* m2,
                       Py_ssize_t next_n=0) noexcept nogil:
    """(mean, m2) of the n elements at x: float32 in one pass of shifted sums
    (lanes_moments_f32); float64 as the mean, then the squared deviations, prefetching the
    next_n elements that follow between the two passes, so that memory stays busy while the
    second reads L1 (no value changes)."""
    cdef double mu
    if floating is float:
        lanes_moments_f32(x, n, mean, m2)
    else:
        mu = lanes_sum_f64(x, n) / n
        if next_n > 0:
            lanes_prefetch_bytes(x + n, next_n * sizeof(floating))
        m2[0] = lanes_sqdev_f64(x, n, mu)
        mean[0] = mu


cdef void _segment_moments(const floating* x, Py_ssize_t outer, Py_ssize_t C, Py_ssize_t inner,
                           Py_ssize_t chunk, Py_ssize_t npieces, double* pmean, double* pm2,
                           int nthreads) noexcept nogil:
    cdef Py_ssize_t items = outer * C * npieces, it, p, oc, o, c, start, at
    if nthreads <= 1:
        for it in range(items):
            p = it % npieces
            oc = it // npieces
            o = oc // C
            c = oc % C
            start = p * chunk
            at = (o * npieces + p) * C + c
            # the next item's piece starts where this one ends (pieces tile the segments, the
            # segments tile x): prefetch up to a chunk of it
            _piece(x + oc * inner + start, _min(inner, start + chunk) - start, pmean + at, pm2 + at,
                   _min(chunk, outer * C * inner - oc * inner - _min(inner, start + chunk)))
    else:
        for it in prange(items, num_threads=nthreads, schedule="static"):
            p = it % npieces
            oc = it // npieces
            o = oc // C
            c = oc % C
            start = p * chunk
            at = (o * npieces + p) * C + c
            # the next item's piece starts where this one ends (pieces tile the segments, the
            # segments tile x): prefetch up to a chunk of it
            _piece(x + oc * inner + start, _min(inner, start + chunk) - start, pmean + at, pm2 + at,
                   _min(chunk, outer * C * inner - oc * inner - _min(inner, start + chunk)))


def segment_moments(cnp.ndarray x, Py_ssize_t chunk, cnp.ndarray pmean, cnp.ndarray pm2, int nthreads):
    """Moments of the pieces of every (o, c) segment: pmean/pm2[o, piece, c]."""
    cdef Py_ssize_t outer = cnp.PyArray_DIM(x, 0), C = cnp.PyArray_DIM(x, 1), inner = cnp.PyArray_DIM(x, 2)
    cdef Py_ssize_t npieces = cnp.PyArray_DIM(pmean, 1)
    cdef void* px = cnp.PyArray_DATA(x)
    cdef double* a = <double*>cnp.PyArray_DATA(pmean)
    cdef double* b = <double*>cnp.PyArray_DATA(pm2)
    if cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT32:
        with nogil:
            _segment_moments[float](<float*>px, outer, C, inner, chunk, npieces, a, b, nthreads)
    else:
        with nogil:
            _segment_moments[double](<double*>px, outer, C, inner, chunk, npieces, a, b, nthreads)


cdef inline void _piece_grad(const floating* dy, const floating* x, Py_ssize_t n, double mean,
                             double rstd, double* sg, double* sgx) noexcept nogil:
    if floating is float:
        lanes_grad_f32(dy, NULL, x, n, mean, rstd, sg, sgx)
    else:
        lanes_grad_f64(dy, NULL, x, n, mean, rstd, sg, sgx)


cdef void _segment_grad(const floating* dy, const floating* x, const double* mean, const double* rstd,
                        bint per_row, Py_ssize_t outer, Py_ssize_t C, Py_ssize_t inner, Py_ssize_t chunk,
                        Py_ssize_t npieces, double* psg, double* psgx, int nthreads) noexcept nogil:
    cdef Py_ssize_t items = outer * C * npieces, it, p, oc, o, c, start, at, q
    if nthreads <= 1:
        for it in range(items):
            p = it % npieces
            oc = it // npieces
            o = oc // C
            c = oc % C
            q = oc if per_row else c
            start = p * chunk
            at = (o * npieces + p) * C + c
            _piece_grad(dy + oc * inner + start, x + oc * inner + start,
                        _min(inner, start + chunk) - start, mean[q], rstd[q], psg + at, psgx + at)
    else:
        for it in prange(items, num_threads=nthreads, schedule="static"):
            p = it % npieces
            oc = it // npieces
            o = oc // C
            c = oc % C
            q = oc if per_row else c
            start = p * chunk
            at = (o * npieces + p) * C + c
            _piece_grad(dy + oc * inner + start, x + oc * inner + start,
                        _min(inner, start + chunk) - start, mean[q], rstd[q], psg + at, psgx + at)


def segment_grad_sums(cnp.ndarray dy, cnp.ndarray x, cnp.ndarray mean, cnp.ndarray rstd,
                      Py_ssize_t chunk, cnp.ndarray psg, cnp.ndarray psgx, int nthreads):
    """sum dy and sum dy * xhat over the pieces of every (o, c) segment: psg/psgx[o, piece, c].
    mean/rstd: (1, C) or (outer, C)."""
    cdef Py_ssize_t outer = cnp.PyArray_DIM(x, 0), C = cnp.PyArray_DIM(x, 1), inner = cnp.PyArray_DIM(x, 2)
    cdef Py_ssize_t npieces = cnp.PyArray_DIM(psg, 1)
    cdef bint per_row = cnp.PyArray_DIM(mean, 0) > 1
    cdef void* pdy = cnp.PyArray_DATA(dy)
    cdef void* px = cnp.PyArray_DATA(x)
    cdef double* pm = <double*>cnp.PyArray_DATA(mean)
    cdef double* pr = <double*>cnp.PyArray_DATA(rstd)
    cdef double* a = <double*>cnp.PyArray_DATA(psg)
    cdef double* b = <double*>cnp.PyArray_DATA(psgx)
    if cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT32:
        with nogil:
            _segment_grad[float](<float*>pdy, <float*>px, pm, pr, per_row, outer, C, inner, chunk,
                                 npieces, a, b, nthreads)
    else:
        with nogil:
            _segment_grad[double](<double*>pdy, <double*>px, pm, pr, per_row, outer, C, inner, chunk,
                                  npieces, a, b, nthreads)


# ---------------------------------------------------------------- column pieces


cdef void _column_block(const floating* x, Py_ssize_t b, Py_ssize_t outer, Py_ssize_t C,
                        Py_ssize_t inner, Py_ssize_t rb, double* pmean, double* pm2) noexcept nogil:
    """Block b's columns, each summed row by row: the mean, then the squared deviations
    (cols_moments in lanes.h: 32 columns at a time in registers)."""
    cdef Py_ssize_t ncols = C * inner, r0 = b * rb, r1 = _min(outer, b * rb + rb)
    cdef Py_ssize_t nb = (_min(outer, r1 + rb) - r1) * ncols * sizeof(floating)  # the next block
    if floating is float:
        cols_moments_f32(x + r0 * ncols, r1 - r0, ncols, pmean + b * ncols, pm2 + b * ncols,
                         x + r1 * ncols, nb)
    else:
        cols_moments_f64(x + r0 * ncols, r1 - r0, ncols, pmean + b * ncols, pm2 + b * ncols,
                         x + r1 * ncols, nb)


def column_moments(cnp.ndarray x, Py_ssize_t rb, cnp.ndarray pmean, cnp.ndarray pm2,
                   cnp.ndarray work, int nthreads):
    """Moments of blocks of ``rb`` rows per column: pmean/pm2[block, i, c]. ``work``: float64
    scratch of 2 * nblocks * C * inner."""
    cdef Py_ssize_t outer = cnp.PyArray_DIM(x, 0), C = cnp.PyArray_DIM(x, 1), inner = cnp.PyArray_DIM(x, 2)
    cdef Py_ssize_t nblocks = cnp.PyArray_DIM(pmean, 0), ncols = C * inner, b, j
    cdef void* px = cnp.PyArray_DATA(x)
    cdef double* ws = <double*>cnp.PyArray_DATA(work)
    cdef double* wq = ws + nblocks * ncols
    cdef double* a = <double*>cnp.PyArray_DATA(pmean)
    cdef double* q = <double*>cnp.PyArray_DATA(pm2)
    with nogil:
        if cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT32:
            if nthreads <= 1:
                for b in range(nblocks):
                    _column_block[float](<float*>px, b, outer, C, inner, rb, ws, wq)
            else:
                for b in prange(nblocks, num_threads=nthreads, schedule="static"):
                    _column_block[float](<float*>px, b, outer, C, inner, rb, ws, wq)
        else:
            if nthreads <= 1:
                for b in range(nblocks):
                    _column_block[double](<double*>px, b, outer, C, inner, rb, ws, wq)
            else:
                for b in prange(nblocks, num_threads=nthreads, schedule="static"):
                    _column_block[double](<double*>px, b, outer, C, inner, rb, ws, wq)
        _to_pieces(ws, a, nblocks, C, inner)
        _to_pieces(wq, q, nblocks, C, inner)


cdef void _to_pieces(const double* src, double* dst, Py_ssize_t nblocks, Py_ssize_t C,
                     Py_ssize_t inner) noexcept nogil:
    """[block, c * inner + i] -> [block, i, c]."""
    cdef Py_ssize_t b, c, i, ncols = C * inner
    for b in range(nblocks):
        for c in range(C):
            for i in range(inner):
                dst[(b * inner + i) * C + c] = src[b * ncols + c * inner + i]


cdef void _column_grad_block(const floating* dy, const floating* x, const double* mu, const double* rs,
                             Py_ssize_t b, Py_ssize_t outer, Py_ssize_t ncols, Py_ssize_t rb,
                             double* sg, double* sgx) noexcept nogil:
    """Block b's columns, each summed row by row (cols_grad in lanes.h), prefetching the next
    block."""
    cdef Py_ssize_t r0 = b * rb, r1 = _min(outer, b * rb + rb)
    cdef Py_ssize_t nb = (_min(outer, r1 + rb) - r1) * ncols * sizeof(floating)  # the next block
    if floating is float:
        cols_grad_f32(dy + r0 * ncols, x + r0 * ncols, r1 - r0, ncols, mu, rs, sg + b * ncols,
                      sgx + b * ncols, dy + r1 * ncols, x + r1 * ncols, nb)
    else:
        cols_grad_f64(dy + r0 * ncols, x + r0 * ncols, r1 - r0, ncols, mu, rs, sg + b * ncols,
                      sgx + b * ncols, dy + r1 * ncols, x + r1 * ncols, nb)


def column_grad_sums(cnp.ndarray dy, cnp.ndarray x, cnp.ndarray mean, cnp.ndarray rstd,
                     Py_ssize_t rb, cnp.ndarray psg, cnp.ndarray psgx, cnp.ndarray work, int nthreads):
    """sum dy, sum dy * xhat over blocks of ``rb`` rows per column: psg/psgx[block, i, c].
    mean/rstd: (1, C). ``work``: float64 scratch of 2 * (nblocks + 1) * C * inner."""
    cdef Py_ssize_t outer = cnp.PyArray_DIM(x, 0), C = cnp.PyArray_DIM(x, 1), inner = cnp.PyArray_DIM(x, 2)
    cdef Py_ssize_t nblocks = cnp.PyArray_DIM(psg, 0), ncols = C * inner, b, j
    cdef void* pdy = cnp.PyArray_DATA(dy)
    cdef void* px = cnp.PyArray_DATA(x)
    cdef double* pm = <double*>cnp.PyArray_DATA(mean)
    cdef double* pr = <double*>cnp.PyArray_DATA(rstd)
    cdef double* mu = <double*>cnp.PyArray_DATA(work)
    cdef double* rs = mu + ncols
    cdef double* w1 = rs + ncols
    cdef double* w2 = w1 + nblocks * ncols
    with nogil:
        for j in range(ncols):
            mu[j] = pm[j // inner]
            rs[j] = pr[j // inner]
        if cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT32:
            if nthreads <= 1:
                for b in range(nblocks):
                    _column_grad_block[float](<float*>pdy, <float*>px, mu, rs, b, outer, ncols, rb, w1, w2)
            else:
                for b in prange(nblocks, num_threads=nthreads, schedule="static"):
                    _column_grad_block[float](<float*>pdy, <float*>px, mu, rs, b, outer, ncols, rb, w1, w2)
        else:
            if nthreads <= 1:
                for b in range(nblocks):
                    _column_grad_block[double](<double*>pdy, <double*>px, mu, rs, b, outer, ncols, rb, w1, w2)
            else:
                for b in prange(nblocks, num_threads=nthreads, schedule="static"):
                    _column_grad_block[double](<double*>pdy, <double*>px, mu, rs, b, outer, ncols, rb, w1, w2)
        _to_pieces(w1, <double*>cnp.PyArray_DATA(psg), nblocks, C, inner)
        _to_pieces(w2, <double*>cnp.PyArray_DATA(psgx), nblocks, C, inner)


# ---------------------------------------------------------------- merging pieces


cdef inline void _merge_one(Py_ssize_t g, Py_ssize_t c, const double* cnt, Py_ssize_t K, Py_ssize_t C,
                            const double* pmean, const double* pm2, double* mean, double* m2) noexcept nogil:
    cdef double na = 0.0, ma = 0.0, qa = 0.0, nb, mb, qb, n, d
    cdef Py_ssize_t k, at
    for k in range(K):
        at = (g * K + k) * C + c
        nb = cnt[k]
        mb = pmean[at]
        qb = pm2[at]
        if na == 0.0:
            na = nb
            ma = mb
            qa = qb
        else:
            n = na + nb
            d = mb - ma
            ma = ma + d * (nb / n)
            qa = (qa + qb) + d * d * (na * nb / n)
            na = n
    mean[g * C + c] = ma
    m2[g * C + c] = qa


def merge_pieces(cnp.ndarray cnt, cnp.ndarray pmean, cnp.ndarray pm2, cnp.ndarray mean,
                 cnp.ndarray m2, int nthreads):
    """Chan-merge pmean/pm2[g, :, c] (counts cnt[:]) in order into mean/m2[g, c]."""
    cdef Py_ssize_t G = cnp.PyArray_DIM(pmean, 0), K = cnp.PyArray_DIM(pmean, 1), C = cnp.PyArray_DIM(pmean, 2), gc
    cdef double* pc = <double*>cnp.PyArray_DATA(cnt)
    cdef double* a = <double*>cnp.PyArray_DATA(pmean)
    cdef double* b = <double*>cnp.PyArray_DATA(pm2)
    cdef double* om = <double*>cnp.PyArray_DATA(mean)
    cdef double* oq = <double*>cnp.PyArray_DATA(m2)
    with nogil:
        if nthreads <= 1:
            for gc in range(G * C):
                _merge_one(gc // C, gc % C, pc, K, C, a, b, om, oq)
        else:
            for gc in prange(G * C, num_threads=nthreads, schedule="static"):
                _merge_one(gc // C, gc % C, pc, K, C, a, b, om, oq)


cdef inline void _sum_one(Py_ssize_t g, Py_ssize_t c, Py_ssize_t K, Py_ssize_t C, const double* p1,
                          const double* p2, double* s1, double* s2) noexcept nogil:
    cdef double a = 0.0, b = 0.0
    cdef Py_ssize_t k
    for k in range(K):
        a += p1[(g * K + k) * C + c]
        b += p2[(g * K + k) * C + c]
    s1[g * C + c] = a
    s2[g * C + c] = b


def sum_pieces(cnp.ndarray p1, cnp.ndarray p2, cnp.ndarray s1, cnp.ndarray s2, int nthreads):
    """s1/s2[g, c] = sum over k, in order, of p1/p2[g, k, c]."""
    cdef Py_ssize_t G = cnp.PyArray_DIM(p1, 0), K = cnp.PyArray_DIM(p1, 1), C = cnp.PyArray_DIM(p1, 2), gc
    cdef double* a = <double*>cnp.PyArray_DATA(p1)
    cdef double* b = <double*>cnp.PyArray_DATA(p2)
    cdef double* oa = <double*>cnp.PyArray_DATA(s1)
    cdef double* ob = <double*>cnp.PyArray_DATA(s2)
    with nogil:
        if nthreads <= 1:
            for gc in range(G * C):
                _sum_one(gc // C, gc % C, K, C, a, b, oa, ob)
        else:
            for gc in prange(G * C, num_threads=nthreads, schedule="static"):
                _sum_one(gc // C, gc % C, K, C, a, b, oa, ob)


# ---------------------------------------------------------------- elementwise passes


cdef inline void _affine_segment(const floating* x, floating* y, Py_ssize_t n, double mu, double sc,
                                 double sh) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        y[i] = <floating>((x[i] - mu) * sc + sh)


cdef inline void _affine_row(const floating* x, floating* y, Py_ssize_t C, const double* mu,
                             const double* sc, const double* sh) noexcept nogil:
    cdef Py_ssize_t c
    for c in range(C):
        y[c] = <floating>((x[c] - mu[c]) * sc[c] + sh[c])


cdef void _affine(const floating* x, floating* y, const double* mean, const double* scale,
                  const double* shift, bint per_row, Py_ssize_t outer, Py_ssize_t C, Py_ssize_t inner,
                  int nthreads) noexcept nogil:
    cdef Py_ssize_t o, oc, q
    if inner == 1:
        if nthreads <= 1:
            for o in range(outer):
                q = o * C if per_row else 0
                _affine_row(x + o * C, y + o * C, C, mean + q, scale + q, shift + q)
        else:
            for o in prange(outer, num_threads=nthreads, schedule="static"):
                q = o * C if per_row else 0
                _affine_row(x + o * C, y + o * C, C, mean + q, scale + q, shift + q)
        return
    if nthreads <= 1:
        for oc in range(outer * C):
            q = oc if per_row else oc % C
            _affine_segment(x + oc * inner, y + oc * inner, inner, mean[q], scale[q], shift[q])
    else:
        for oc in prange(outer * C, num_threads=nthreads, schedule="static"):
            q = oc if per_row else oc % C
            _affine_segment(x + oc * inner, y + oc * inner, inner, mean[q], scale[q], shift[q])


def affine_apply(cnp.ndarray x, cnp.ndarray mean, cnp.ndarray scale, cnp.ndarray shift,
                 cnp.ndarray y, int nthreads):
    """y = (x - mean) * scale + shift in float64, rounded once; mean/scale/shift (1 or outer, C)."""
    cdef Py_ssize_t outer = cnp.PyArray_DIM(x, 0), C = cnp.PyArray_DIM(x, 1), inner = cnp.PyArray_DIM(x, 2)
    cdef bint per_row = cnp.PyArray_DIM(mean, 0) > 1
    cdef void* px = cnp.PyArray_DATA(x)
    cdef void* py = cnp.PyArray_DATA(y)
    cdef double* pm = <double*>cnp.PyArray_DATA(mean)
    cdef double* ps = <double*>cnp.PyArray_DATA(scale)
    cdef double* ph = <double*>cnp.PyArray_DATA(shift)
    if cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT32:
        with nogil:
            _affine[float](<float*>px, <float*>py, pm, ps, ph, per_row, outer, C, inner, nthreads)
    else:
        with nogil:
            _affine[double](<double*>px, <double*>py, pm, ps, ph, per_row, outer, C, inner, nthreads)


cdef inline void _grad_segment(const floating* dy, const floating* x, floating* dx, Py_ssize_t n,
                               double mu, double a, double b, double cc) noexcept nogil:
    cdef Py_ssize_t i
    cdef double d
    for i in range(n):
        d = dy[i]
        dx[i] = <floating>((a * d + b * (x[i] - mu)) + cc)


cdef inline void _grad_row(const floating* dy, const floating* x, floating* dx, Py_ssize_t C,
                           const double* mu, const double* a, const double* b,
                           const double* cc) noexcept nogil:
    cdef Py_ssize_t c
    cdef double d
    for c in range(C):
        d = dy[c]
        dx[c] = <floating>((a[c] * d + b[c] * (x[c] - mu[c])) + cc[c])


cdef void _grad(const floating* dy, const floating* x, floating* dx, const double* mean,
                const double* A, const double* B, const double* Cc, bint per_row, Py_ssize_t outer,
                Py_ssize_t C, Py_ssize_t inner, int nthreads) noexcept nogil:
    cdef Py_ssize_t o, oc, q
    if inner == 1:
        if nthreads <= 1:
            for o in range(outer):
                q = o * C if per_row else 0
                _grad_row(dy + o * C, x + o * C, dx + o * C, C, mean + q, A + q, B + q, Cc + q)
        else:
            for o in prange(outer, num_threads=nthreads, schedule="static"):
                q = o * C if per_row else 0
                _grad_row(dy + o * C, x + o * C, dx + o * C, C, mean + q, A + q, B + q, Cc + q)
        return
    if nthreads <= 1:
        for oc in range(outer * C):
            q = oc if per_row else oc % C
            _grad_segment(dy + oc * inner, x + oc * inner, dx + oc * inner, inner, mean[q], A[q], B[q], Cc[q])
    else:
        for oc in prange(outer * C, num_threads=nthreads, schedule="static"):
            q = oc if per_row else oc % C
            _grad_segment(dy + oc * inner, x + oc * inner, dx + oc * inner, inner, mean[q], A[q], B[q], Cc[q])


def grad_apply(cnp.ndarray dy, cnp.ndarray x, cnp.ndarray mean, cnp.ndarray A, cnp.ndarray B,
               cnp.ndarray Cc, cnp.ndarray dx, int nthreads):
    """dx = (A * dy + B * (x - mean)) + Cc in float64, rounded once; coefficients (1 or outer, C)."""
    cdef Py_ssize_t outer = cnp.PyArray_DIM(x, 0), C = cnp.PyArray_DIM(x, 1), inner = cnp.PyArray_DIM(x, 2)
    cdef bint per_row = cnp.PyArray_DIM(mean, 0) > 1
    cdef void* pdy = cnp.PyArray_DATA(dy)
    cdef void* px = cnp.PyArray_DATA(x)
    cdef void* pdx = cnp.PyArray_DATA(dx)
    cdef double* pm = <double*>cnp.PyArray_DATA(mean)
    cdef double* pa = <double*>cnp.PyArray_DATA(A)
    cdef double* pb = <double*>cnp.PyArray_DATA(B)
    cdef double* pc = <double*>cnp.PyArray_DATA(Cc)
    if cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT32:
        with nogil:
            _grad[float](<float*>pdy, <float*>px, <float*>pdx, pm, pa, pb, pc, per_row, outer, C, inner, nthreads)
    else:
        with nogil:
            _grad[double](<double*>pdy, <double*>px, <double*>pdx, pm, pa, pb, pc, per_row, outer, C, inner, nthreads)


# ---------------------------------------------------------------- fused row normalization

from libc.math cimport sqrt


cdef void _group_row(const floating* x, floating* y, Py_ssize_t r, Py_ssize_t G, Py_ssize_t L,
                     Py_ssize_t per, Py_ssize_t chunk, const double* w, const double* b, double eps,
                     double* mean, double* m2) noexcept nogil:
    cdef const floating* xr = x + r * L
    cdef floating* yr = y + r * L
    cdef double na = 0.0, ma = 0.0, qa = 0.0, nb, mb, qb, t, d, invstd
    cdef Py_ssize_t start, stop, j, c, g = r % G, inner = L // per
    start = 0
    while start < L:
        stop = _min(L, start + chunk)
        _piece(xr + start, stop - start, &mb, &qb)
        nb = <double>(stop - start)
        if na == 0.0:
            na = nb
            ma = mb
            qa = qb
        else:
            t = na + nb
            d = mb - ma
            ma = ma + d * (nb / t)
            qa = (qa + qb) + d * d * (na * nb / t)
            na = t
        start += chunk
    mean[r] = ma
    m2[r] = qa
    invstd = 1.0 / sqrt(qa / L + eps)
    for j in range(per):
        c = g * per + j
        _affine_segment(xr + j * inner, yr + j * inner, inner, ma, invstd * w[c], b[c])


cdef void _group_forward(const floating* x, floating* y, Py_ssize_t rows, Py_ssize_t G, Py_ssize_t L,
                         Py_ssize_t per, Py_ssize_t chunk, const double* w, const double* b,
                         double eps, double* mean, double* m2, int nthreads) noexcept nogil:
    cdef Py_ssize_t r
    if nthreads <= 1:
        for r in range(rows):
            _group_row(x, y, r, G, L, per, chunk, w, b, eps, mean, m2)
    else:
        for r in prange(rows, num_threads=nthreads, schedule="static"):
            _group_row(x, y, r, G, L, per, chunk, w, b, eps, mean, m2)


def group_forward(cnp.ndarray x, Py_ssize_t per, Py_ssize_t chunk, cnp.ndarray w, cnp.ndarray b,
                  double eps, cnp.ndarray y, cnp.ndarray mean, cnp.ndarray m2, int nthreads):
    """Rows (n, g) of x (N, G, L): statistics (mean, m2 into (N, G)) and y with the per-channel
    w, b (float64 (G * per,)) in one visit of each row; see kernels/numba/batch.py."""
    cdef Py_ssize_t N = cnp.PyArray_DIM(x, 0), G = cnp.PyArray_DIM(x, 1), L = cnp.PyArray_DIM(x, 2)
    cdef void* px = cnp.PyArray_DATA(x)
    cdef void* py = cnp.PyArray_DATA(y)
    cdef double* pw = <double*>cnp.PyArray_DATA(w)
    cdef double* pb = <double*>cnp.PyArray_DATA(b)
    cdef double* pm = <double*>cnp.PyArray_DATA(mean)
    cdef double* pq = <double*>cnp.PyArray_DATA(m2)
    if cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT32:
        with nogil:
            _group_forward[float](<float*>px, <float*>py, N * G, G, L, per, chunk, pw, pb, eps, pm, pq, nthreads)
    else:
        with nogil:
            _group_forward[double](<double*>px, <double*>py, N * G, G, L, per, chunk, pw, pb, eps, pm, pq, nthreads)


cdef void _group_grad_row(const floating* dy, const floating* x, floating* dx, Py_ssize_t r,
                          Py_ssize_t G, Py_ssize_t L, Py_ssize_t per, Py_ssize_t chunk,
                          const double* w, const double* mean, const double* rstd,
                          double* s1, double* s2) noexcept nogil:
    cdef Py_ssize_t n = r // G, g = r % G, inner = L // per, C = G * per, j, c, start, stop, hi
    cdef const floating* dyr = dy + r * L
    cdef const floating* xr = x + r * L
    cdef floating* dxr = dx + r * L
    cdef double mu = mean[r], rs = rstd[r], sg = 0.0, sgx = 0.0, a, b, pa, pb, mg, mgx, bc, cc
    for j in range(per):
        c = g * per + j
        a = 0.0
        b = 0.0
        start = j * inner
        hi = start + inner
        while start < hi:
            stop = _min(hi, start + chunk)
            _piece_grad(dyr + start, xr + start, stop - start, mu, rs, &pa, &pb)
            a += pa
            b += pb
            start += chunk
        s1[n * C + c] = a
        s2[n * C + c] = b
        sg += a * w[c]
        sgx += b * w[c]
    mg = sg / L
    mgx = sgx / L
    bc = -rs * rs * mgx
    cc = -rs * mg
    for j in range(per):
        c = g * per + j
        _grad_segment(dyr + j * inner, xr + j * inner, dxr + j * inner, inner, mu, rs * w[c], bc, cc)


def group_backward(cnp.ndarray dy, cnp.ndarray x, Py_ssize_t per, Py_ssize_t chunk, cnp.ndarray w,
                   cnp.ndarray mean, cnp.ndarray rstd, cnp.ndarray dx, cnp.ndarray s1,
                   cnp.ndarray s2, int nthreads):
    """InstanceNorm/GroupNorm backward per row (n, g) of x (N, G, L), one visit of each row;
    s1/s2 (N, C) receive the per-channel sums of dy and dy * xhat. See kernels/numba/batch.py."""
    cdef Py_ssize_t N = cnp.PyArray_DIM(x, 0), G = cnp.PyArray_DIM(x, 1), L = cnp.PyArray_DIM(x, 2), r
    cdef void* pdy = cnp.PyArray_DATA(dy)
    cdef void* px = cnp.PyArray_DATA(x)
    cdef void* pdx = cnp.PyArray_DATA(dx)
    cdef double* pw = <double*>cnp.PyArray_DATA(w)
    cdef double* pm = <double*>cnp.PyArray_DATA(mean)
    cdef double* pr = <double*>cnp.PyArray_DATA(rstd)
    cdef double* a = <double*>cnp.PyArray_DATA(s1)
    cdef double* b = <double*>cnp.PyArray_DATA(s2)
    if cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT32:
        with nogil:
            if nthreads <= 1:
                for r in range(N * G):
                    _group_grad_row[float](<float*>pdy, <float*>px, <float*>pdx, r, G, L, per, chunk, pw, pm, pr, a, b)
            else:
                for r in prange(N * G, num_threads=nthreads, schedule="static"):
                    _group_grad_row[float](<float*>pdy, <float*>px, <float*>pdx, r, G, L, per, chunk, pw, pm, pr, a, b)
    else:
        with nogil:
            if nthreads <= 1:
                for r in range(N * G):
                    _group_grad_row[double](<double*>pdy, <double*>px, <double*>pdx, r, G, L, per, chunk, pw, pm, pr, a, b)
            else:
                for r in prange(N * G, num_threads=nthreads, schedule="static"):
                    _group_grad_row[double](<double*>pdy, <double*>px, <double*>pdx, r, G, L, per, chunk, pw, pm, pr, a, b)
