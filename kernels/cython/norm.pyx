# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Row-normalization loops (LayerNorm, RMSNorm), Cython + OpenMP.

The same arithmetic, in the same order, as kernels/numba/norm.py, so both backends agree bit
for bit (see the determinism contract there). Arguments are already validated by fastnorm:
C-contiguous arrays, x/dy/w/b/y/dx of one float dtype, mean/rstd/dw/db float64 where given.
"""
from cython.parallel cimport prange
from libc.math cimport sqrt
from libc.stdlib cimport calloc, free
cimport numpy as cnp

cnp.import_array()

ctypedef fused floating:
    float
    double


cdef inline Py_ssize_t row_chunks(Py_ssize_t m) noexcept nogil:
    return m if m < 256 else 256


cdef inline void _centered_stats(const floating* x, Py_ssize_t n, bint center, double eps,
                                 double* mean_out, double* rstd_out) noexcept nogil:
    cdef Py_ssize_t i, n8 = n - n % 8
    cdef double s, s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0
    cdef double d0, d1, d2, d3, d4, d5, d6, d7, d
    cdef double mean = 0.0
    if center:
        i = 0
        while i < n8:
            s0 += x[i]
            s1 += x[i + 1]
            s2 += x[i + 2]
            s3 += x[i + 3]
            s4 += x[i + 4]
            s5 += x[i + 5]
            s6 += x[i + 6]
            s7 += x[i + 7]
            i += 8
        s = ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))
        for i in range(n8, n):
            s += x[i]
        mean = s / n
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0
    i = 0
    while i < n8:
        d0 = <double>x[i] - mean
        d1 = <double>x[i + 1] - mean
        d2 = <double>x[i + 2] - mean
        d3 = <double>x[i + 3] - mean
        d4 = <double>x[i + 4] - mean
        d5 = <double>x[i + 5] - mean
        d6 = <double>x[i + 6] - mean
        d7 = <double>x[i + 7] - mean
        s0 += d0 * d0
        s1 += d1 * d1
        s2 += d2 * d2
        s3 += d3 * d3
        s4 += d4 * d4
        s5 += d5 * d5
        s6 += d6 * d6
        s7 += d7 * d7
        i += 8
    s = ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))
    for i in range(n8, n):
        d = <double>x[i] - mean
        s += d * d
    mean_out[0] = mean
    rstd_out[0] = 1.0 / sqrt(s / n + eps)


cdef inline void _forward_row(const floating* x, const floating* w, const floating* b, floating* y,
                              Py_ssize_t n, bint center, bint has_w, bint has_b, double eps,
                              double* mean_out, double* rstd_out) noexcept nogil:
    cdef Py_ssize_t i
    cdef double mean, rstd
    _centered_stats(x, n, center, eps, &mean, &rstd)
    if has_w and has_b:
        for i in range(n):
            y[i] = <floating>(((<double>x[i] - mean) * rstd) * <double>w[i] + <double>b[i])
    elif has_w:
        for i in range(n):
            y[i] = <floating>(((<double>x[i] - mean) * rstd) * <double>w[i])
    else:
        for i in range(n):
            y[i] = <floating>((<double>x[i] - mean) * rstd)
    mean_out[0] = mean
    rstd_out[0] = rstd


cdef void _forward(const floating* x, const floating* w, const floating* b, floating* y,
                   double* mean, double* rstd, Py_ssize_t m, Py_ssize_t n, bint center,
                   bint has_w, bint has_b, double eps, int nthreads) noexcept nogil:
    cdef Py_ssize_t r
    if nthreads <= 1:
        for r in range(m):
            _forward_row(x + r * n, w, b, y + r * n, n, center, has_w, has_b, eps, mean + r, rstd + r)
    else:
        for r in prange(m, num_threads=nthreads, schedule="static"):
            _forward_row(x + r * n, w, b, y + r * n, n, center, has_w, has_b, eps, mean + r, rstd + r)


def norm_forward(cnp.ndarray x, cnp.ndarray w, cnp.ndarray b, cnp.ndarray y,
                 cnp.ndarray mean, cnp.ndarray rstd, bint center, bint has_w, bint has_b,
                 double eps, int nthreads):
    """y, mean, rstd of each row of x (m, n); see kernels/numba/norm.py."""
    cdef Py_ssize_t m = cnp.PyArray_DIM(x, 0), n = cnp.PyArray_DIM(x, 1)
    cdef double* pm = <double*>cnp.PyArray_DATA(mean)
    cdef double* pr = <double*>cnp.PyArray_DATA(rstd)
    cdef void* px = cnp.PyArray_DATA(x)
    cdef void* pw = cnp.PyArray_DATA(w)
    cdef void* pb = cnp.PyArray_DATA(b)
    cdef void* py = cnp.PyArray_DATA(y)
    if cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT32:
        with nogil:
            _forward[float](<float*>px, <float*>pw, <float*>pb, <float*>py, pm, pr, m, n,
                            center, has_w, has_b, eps, nthreads)
    else:
        with nogil:
            _forward[double](<double*>px, <double*>pw, <double*>pb, <double*>py, pm, pr, m, n,
                             center, has_w, has_b, eps, nthreads)


cdef inline void _backward_row(const floating* dy, const floating* x, const floating* w, floating* dx,
                               Py_ssize_t n, double mean, double rstd, bint center, bint has_w,
                               double* pdw, double* pdb) noexcept nogil:
    cdef Py_ssize_t i, n8 = n - n % 8
    cdef double a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0
    cdef double c0 = 0, c1 = 0, c2 = 0, c3 = 0, c4 = 0, c5 = 0, c6 = 0, c7 = 0
    cdef double g0, g1, g2, g3, g4, g5, g6, g7, g, sg, sgx, mg, mgx, xhat
    i = 0
    while i < n8:
        g0 = <double>dy[i] * (<double>w[i] if has_w else 1.0)
        g1 = <double>dy[i + 1] * (<double>w[i + 1] if has_w else 1.0)
        g2 = <double>dy[i + 2] * (<double>w[i + 2] if has_w else 1.0)
        g3 = <double>dy[i + 3] * (<double>w[i + 3] if has_w else 1.0)
        g4 = <double>dy[i + 4] * (<double>w[i + 4] if has_w else 1.0)
        g5 = <double>dy[i + 5] * (<double>w[i + 5] if has_w else 1.0)
        g6 = <double>dy[i + 6] * (<double>w[i + 6] if has_w else 1.0)
        g7 = <double>dy[i + 7] * (<double>w[i + 7] if has_w else 1.0)
        a0 += g0
        a1 += g1
        a2 += g2
        a3 += g3
        a4 += g4
        a5 += g5
        a6 += g6
        a7 += g7
        c0 += g0 * ((<double>x[i] - mean) * rstd)
        c1 += g1 * ((<double>x[i + 1] - mean) * rstd)
        c2 += g2 * ((<double>x[i + 2] - mean) * rstd)
        c3 += g3 * ((<double>x[i + 3] - mean) * rstd)
        c4 += g4 * ((<double>x[i + 4] - mean) * rstd)
        c5 += g5 * ((<double>x[i + 5] - mean) * rstd)
        c6 += g6 * ((<double>x[i + 6] - mean) * rstd)
        c7 += g7 * ((<double>x[i + 7] - mean) * rstd)
        i += 8
    sg = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))
    sgx = ((c0 + c1) + (c2 + c3)) + ((c4 + c5) + (c6 + c7))
    for i in range(n8, n):
        g = <double>dy[i] * (<double>w[i] if has_w else 1.0)
        sg = sg + g
        sgx = sgx + g * ((<double>x[i] - mean) * rstd)
    mg = sg / n if center else 0.0
    mgx = sgx / n
    for i in range(n):
        xhat = (<double>x[i] - mean) * rstd
        g = <double>dy[i] * (<double>w[i] if has_w else 1.0)
        dx[i] = <floating>(((g - mg) - xhat * mgx) * rstd)
        if pdw != NULL:
            pdw[i] += <double>dy[i] * xhat
        if pdb != NULL:
            pdb[i] += <double>dy[i]


cdef void _backward(const floating* dy, const floating* x, const floating* w, floating* dx,
                    double* dw, double* db, const double* mean, const double* rstd,
                    Py_ssize_t m, Py_ssize_t n, bint center, bint has_w,
                    bint want_dw, bint want_db, int nthreads) noexcept nogil:
    cdef Py_ssize_t nchunks = row_chunks(m), c, r, j
    cdef double* pdw = NULL
    cdef double* pdb = NULL
    cdef double s
    if want_dw:
        pdw = <double*>calloc(nchunks * n + 1, sizeof(double))
    if want_db:
        pdb = <double*>calloc(nchunks * n + 1, sizeof(double))
    if nthreads <= 1:
        for c in range(nchunks):
            for r in range(c * m // nchunks, (c + 1) * m // nchunks):
                _backward_row(dy + r * n, x + r * n, w, dx + r * n, n, mean[r], rstd[r], center, has_w,
                              pdw + c * n if want_dw else NULL, pdb + c * n if want_db else NULL)
    else:
        for c in prange(nchunks, num_threads=nthreads, schedule="static"):
            for r in range(c * m // nchunks, (c + 1) * m // nchunks):
                _backward_row(dy + r * n, x + r * n, w, dx + r * n, n, mean[r], rstd[r], center, has_w,
                              pdw + c * n if want_dw else NULL, pdb + c * n if want_db else NULL)
    if want_dw:
        for j in range(n):
            s = 0.0
            for c in range(nchunks):
                s = s + pdw[c * n + j]
            dw[j] = s
        free(pdw)
    if want_db:
        for j in range(n):
            s = 0.0
            for c in range(nchunks):
                s = s + pdb[c * n + j]
            db[j] = s
        free(pdb)


def norm_backward(cnp.ndarray dy, cnp.ndarray x, cnp.ndarray w, cnp.ndarray dx,
                  cnp.ndarray dw, cnp.ndarray db, cnp.ndarray mean, cnp.ndarray rstd,
                  bint center, bint has_w, bint want_dw, bint want_db, int nthreads):
    """dx of each row of x (m, n); dw = sum dy*xhat and db = sum dy over rows (float64)."""
    cdef Py_ssize_t m = cnp.PyArray_DIM(x, 0), n = cnp.PyArray_DIM(x, 1)
    cdef double* pdw = <double*>cnp.PyArray_DATA(dw)
    cdef double* pdb = <double*>cnp.PyArray_DATA(db)
    cdef const double* pm = <double*>cnp.PyArray_DATA(mean)
    cdef const double* pr = <double*>cnp.PyArray_DATA(rstd)
    cdef void* pdy = cnp.PyArray_DATA(dy)
    cdef void* px = cnp.PyArray_DATA(x)
    cdef void* pw = cnp.PyArray_DATA(w)
    cdef void* pdx = cnp.PyArray_DATA(dx)
    if cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT32:
        with nogil:
            _backward[float](<float*>pdy, <float*>px, <float*>pw, <float*>pdx, pdw, pdb, pm, pr, m, n,
                             center, has_w, want_dw, want_db, nthreads)
    else:
        with nogil:
            _backward[double](<double*>pdy, <double*>px, <double*>pw, <double*>pdx, pdw, pdb, pm, pr,
                              m, n, center, has_w, want_dw, want_db, nthreads)
