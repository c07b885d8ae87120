# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Row-wise divergences, softmax and softmax cross-entropy, Cython + OpenMP.

The arithmetic is in divmath.h, operation for operation that of kernels/numba/divergence.py
(our own exp/log, 32 fixed float64 lanes), so both backends agree bit for bit. Arguments are
validated by fastnorm: C-contiguous 2-D rows of one float dtype, float64 results.
"""
from cython.parallel cimport prange
from libc.stdint cimport int64_t
from libc.stdlib cimport malloc, free
cimport numpy as cnp

cnp.import_array()

ctypedef fused floating:
    float
    double


cdef extern from "divmath.h" nogil:
    double dm_div_row_f32(int mode, const float* p, const float* q, Py_ssize_t n, double* buf)
    double dm_div_row_f64(int mode, const double* p, const double* q, Py_ssize_t n, double* buf)
    void dm_softmax_row_f32(const float* x, float* y, Py_ssize_t n, int log, double* e)
    void dm_softmax_row_f64(const double* x, double* y, Py_ssize_t n, int log, double* e)
    double dm_sce_row_f32(const float* x, Py_ssize_t n, int64_t label, const double* w, double wsum,
                          int64_t ignore_index, double eps, double g, float* dx, double* e,
                          double* sbuf)
    double dm_sce_row_f64(const double* x, Py_ssize_t n, int64_t label, const double* w, double wsum,
                          int64_t ignore_index, double eps, double g, double* dx, double* e,
                          double* sbuf)


cdef inline Py_ssize_t row_chunks(Py_ssize_t m) noexcept nogil:
    return m if m < 256 else 256


cdef void _div_chunk(Py_ssize_t c, Py_ssize_t nchunks, int mode, const floating* p,
                     const floating* q, double* out, Py_ssize_t m, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t r
    cdef double* buf = <double*>malloc((n + 1) * sizeof(double))
    for r in range(c * m // nchunks, (c + 1) * m // nchunks):
        if floating is float:
            out[r] = dm_div_row_f32(mode, p + r * n, q + r * n, n, buf)
        else:
            out[r] = dm_div_row_f64(mode, p + r * n, q + r * n, n, buf)
    free(buf)


cdef void _div(int mode, const floating* p, const floating* q, double* out, Py_ssize_t m,
               Py_ssize_t n, int nthreads) noexcept nogil:
    cdef Py_ssize_t nchunks = row_chunks(m), c
    if nthreads <= 1:
        for c in range(nchunks):
            _div_chunk(c, nchunks, mode, p, q, out, m, n)
    else:
        for c in prange(nchunks, num_threads=nthreads, schedule="static"):
            _div_chunk(c, nchunks, mode, p, q, out, m, n)


def divergence_rows(int mode, cnp.ndarray p, cnp.ndarray q, cnp.ndarray out, int nthreads):
    """out[r] = divergence ``mode`` of rows p[r], q[r]; see kernels/numba/divergence.py."""
    cdef Py_ssize_t m = cnp.PyArray_DIM(p, 0), n = cnp.PyArray_DIM(p, 1)
    cdef double* po = <double*>cnp.PyArray_DATA(out)
    cdef void* pp = cnp.PyArray_DATA(p)
    cdef void* pq = cnp.PyArray_DATA(q)
    if cnp.PyArray_TYPE(p) == cnp.NPY_FLOAT32:
        with nogil:
            _div[float](mode, <float*>pp, <float*>pq, po, m, n, nthreads)
    else:
        with nogil:
            _div[double](mode, <double*>pp, <double*>pq, po, m, n, nthreads)


cdef void _softmax_chunk(Py_ssize_t c, Py_ssize_t nchunks, const floating* x, floating* y,
                         Py_ssize_t m, Py_ssize_t n, int log) noexcept nogil:
    cdef Py_ssize_t r
    cdef double* e = <double*>malloc((n + 1) * sizeof(double))
    for r in range(c * m // nchunks, (c + 1) * m // nchunks):
        if floating is float:
            dm_softmax_row_f32(x + r * n, y + r * n, n, log, e)
        else:
            dm_softmax_row_f64(x + r * n, y + r * n, n, log, e)
    free(e)


cdef void _softmax(const floating* x, floating* y, Py_ssize_t m, Py_ssize_t n, int log,
                   int nthreads) noexcept nogil:
    cdef Py_ssize_t nchunks = row_chunks(m), c
    if nthreads <= 1:
        for c in range(nchunks):
            _softmax_chunk(c, nchunks, x, y, m, n, log)
    else:
        for c in prange(nchunks, num_threads=nthreads, schedule="static"):
            _softmax_chunk(c, nchunks, x, y, m, n, log)


def softmax_rows(cnp.ndarray x, cnp.ndarray y, bint log, int nthreads):
    """y[r] = softmax(x[r]), or log_softmax when ``log``."""
    cdef Py_ssize_t m = cnp.PyArray_DIM(x, 0), n = cnp.PyArray_DIM(x, 1)
    cdef void* px = cnp.PyArray_DATA(x)
    cdef void* py = cnp.PyArray_DATA(y)
    if cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT32:
        with nogil:
            _softmax[float](<float*>px, <float*>py, m, n, log, nthreads)
    else:
        with nogil:
            _softmax[double](<double*>px, <double*>py, m, n, log, nthreads)


cdef void _sce_chunk(Py_ssize_t c, Py_ssize_t nchunks, const floating* x, const int64_t* labels,
                     const double* w, double wsum, int64_t ignore_index, double eps,
                     const double* gscale, double* loss, floating* dx, Py_ssize_t m,
                     Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t r
    cdef double* e = <double*>malloc((n + 1) * sizeof(double))
    cdef double* sbuf = <double*>malloc((n + 1) * sizeof(double)) if eps > 0.0 else NULL
    for r in range(c * m // nchunks, (c + 1) * m // nchunks):
        if floating is float:
            loss[r] = dm_sce_row_f32(x + r * n, n, labels[r], w, wsum, ignore_index, eps,
                                     gscale[r] if dx != NULL else 0.0,
                                     dx + r * n if dx != NULL else NULL, e, sbuf)
        else:
            loss[r] = dm_sce_row_f64(x + r * n, n, labels[r], w, wsum, ignore_index, eps,
                                     gscale[r] if dx != NULL else 0.0,
                                     dx + r * n if dx != NULL else NULL, e, sbuf)
    free(e)
    free(sbuf)


cdef void _sce(const floating* x, const int64_t* labels, const double* w, double wsum,
               int64_t ignore_index, double eps, const double* gscale, double* loss, floating* dx,
               Py_ssize_t m, Py_ssize_t n, int nthreads) noexcept nogil:
    cdef Py_ssize_t nchunks = row_chunks(m), c
    if nthreads <= 1:
        for c in range(nchunks):
            _sce_chunk(c, nchunks, x, labels, w, wsum, ignore_index, eps, gscale, loss, dx, m, n)
    else:
        for c in prange(nchunks, num_threads=nthreads, schedule="static"):
            _sce_chunk(c, nchunks, x, labels, w, wsum, ignore_index, eps, gscale, loss, dx, m, n)


def softmax_cross_entropy_rows(cnp.ndarray x, cnp.ndarray labels, cnp.ndarray w, bint has_w,
                               double wsum, int64_t ignore_index, double eps, cnp.ndarray gscale,
                               bint want_grad, cnp.ndarray loss, cnp.ndarray dx, int nthreads):
    """loss[r] of each logits row, dx[r] = gscale[r] * dloss[r]/dx[r] when ``want_grad``."""
    cdef Py_ssize_t m = cnp.PyArray_DIM(x, 0), n = cnp.PyArray_DIM(x, 1)
    cdef const int64_t* pl = <int64_t*>cnp.PyArray_DATA(labels)
    cdef const double* pw = <double*>cnp.PyArray_DATA(w) if has_w else NULL
    cdef const double* pg = <double*>cnp.PyArray_DATA(gscale)
    cdef double* ploss = <double*>cnp.PyArray_DATA(loss)
    cdef void* px = cnp.PyArray_DATA(x)
    cdef void* pdx = cnp.PyArray_DATA(dx) if want_grad else NULL
    if cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT32:
        with nogil:
            _sce[float](<float*>px, pl, pw, wsum, ignore_index, eps, pg, ploss, <float*>pdx, m, n,
                        nthreads)
    else:
        with nogil:
            _sce[double](<double*>px, pl, pw, wsum, ignore_index, eps, pg, ploss, <double*>pdx,
                         m, n, nthreads)
