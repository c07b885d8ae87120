# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Row-normalization loops (LayerNorm, RMSNorm), Cython + OpenMP.

The same arithmetic, in the same order, as kernels/numba/norm.py, so both backends agree bit
for bit (see the determinism contract there); the row sums are in lanes.h (SIMD through vector
extensions, lane for lane the numba loops). Arguments are already validated by fastnorm:
C-contiguous arrays, x/dy/w/b/y/dx of one float dtype, mean/rstd/dw/db float64 where given.
"""
from cython.parallel cimport prange
from libc.math cimport sqrt
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memset
cimport numpy as cnp

cnp.import_array()

ctypedef fused floating:
    float
    double


cdef inline Py_ssize_t row_chunks(Py_ssize_t m) noexcept nogil:
    return m if m < 256 else 256


cdef extern from "lanes.h" nogil:
    double lanes_sum_f64(const double* x, Py_ssize_t n)
    double lanes_sqdev_f32(const float* x, Py_ssize_t n, double mean)
    double lanes_sqdev_f64(const double* x, Py_ssize_t n, double mean)
    void lanes_moments_f32(const float* x, Py_ssize_t n, double* mean, double* m2)
    void lanes_prefetch_bytes(const void* p, Py_ssize_t nbytes)
    void lanes_grad_pf_f32(const float* dy, const float* w, const float* x, float* dx, Py_ssize_t n,
                           double mean, double rstd, double* sg, double* sgx)
    void lanes_grad_pf_f64(const double* dy, const double* w, const double* x, double* dx,
                           Py_ssize_t n, double mean, double rstd, double* sg, double* sgx)
    void lanes_dx_f32(const float* dy, const float* w, const float* x, float* dx, Py_ssize_t n,
                      double mean, double rstd, double mg, double mgx, double* pdw, double* pdb,
                      const float* ndy, const float* nx)
    void lanes_dx_f64(const double* dy, const double* w, const double* x, double* dx, Py_ssize_t n,
                      double mean, double rstd, double mg, double mgx, double* pdw, double* pdb,
                      const double* ndy, const double* nx)


cdef inline void _centered_stats(const floating* x, Py_ssize_t n, bint center, double eps,
                                 double* mean_out, double* rstd_out) noexcept nogil:
    # see kernels/numba/norm.py: float32 LayerNorm rows in one pass of sums of x - x[0] and
    # their squares; float64 ones in two (the mean, then squared deviations); RMSNorm the
    # squares alone
    cdef double mean = 0.0, q
    if floating is float:
        if center:
            lanes_moments_f32(x, n, &mean, &q)
        else:
            q = lanes_sqdev_f32(x, n, 0.0)
    else:
        if center:
            mean = lanes_sum_f64(x, n) / n
        q = lanes_sqdev_f64(x, n, mean)
    mean_out[0] = mean
    rstd_out[0] = 1.0 / sqrt(q / n + eps)


cdef inline void _forward_row(const floating* x, const floating* w, const floating* b, floating* y,
                              Py_ssize_t n, bint center, bint has_w, bint has_b, double eps,
                              double* mean_out, double* rstd_out, bint prefetch_next) noexcept nogil:
    # prefetch_next: the next row (at x + n) exists; it is prefetched before the output pass
    cdef Py_ssize_t i
    cdef double mean, rstd
    _centered_stats(x, n, center, eps, &mean, &rstd)
    if prefetch_next:
        lanes_prefetch_bytes(x + n, n * sizeof(floating))
    # xhat in float64 (x - mean loses nothing), the affine part in the input's dtype
    if has_w and has_b:
        for i in range(n):
            y[i] = <floating>((<double>x[i] - mean) * rstd) * w[i] + b[i]
    elif has_w:
        for i in range(n):
            y[i] = <floating>((<double>x[i] - mean) * rstd) * w[i]
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
            _forward_row(x + r * n, w, b, y + r * n, n, center, has_w, has_b, eps, mean + r, rstd + r,
                         r + 1 < m)
    else:
        # guided: rows are independent (any schedule gives the same bits); a thread slowed
        # by another process on its core no longer holds the whole call back, and each thread
        # still streams long contiguous runs of rows (dynamic 8-row chunks interleaved them)
        for r in prange(m, num_threads=nthreads, schedule="guided", chunksize=16):
            _forward_row(x + r * n, w, b, y + r * n, n, center, has_w, has_b, eps, mean + r, rstd + r,
                         r + 1 < m)


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


cdef void _stats(const floating* x, double* mean, double* rstd, Py_ssize_t m, Py_ssize_t n,
                 bint center, double eps, int nthreads) noexcept nogil:
    cdef Py_ssize_t r
    if nthreads <= 1:
        for r in range(m):
            _centered_stats(x + r * n, n, center, eps, mean + r, rstd + r)
    else:
        for r in prange(m, num_threads=nthreads, schedule="guided", chunksize=16):
            _centered_stats(x + r * n, n, center, eps, mean + r, rstd + r)


def norm_stats(cnp.ndarray x, cnp.ndarray mean, cnp.ndarray rstd, bint center, double eps, int nthreads):
    """mean, rstd of each row of x (m, n), as norm_forward computes them (no y): the
    backward's statistics when the caller has none."""
    cdef Py_ssize_t m = cnp.PyArray_DIM(x, 0), n = cnp.PyArray_DIM(x, 1)
    cdef double* pm = <double*>cnp.PyArray_DATA(mean)
    cdef double* pr = <double*>cnp.PyArray_DATA(rstd)
    cdef void* px = cnp.PyArray_DATA(x)
    if cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT32:
        with nogil:
            _stats[float](<float*>px, pm, pr, m, n, center, eps, nthreads)
    else:
        with nogil:
            _stats[double](<double*>px, pm, pr, m, n, center, eps, nthreads)


cdef inline void _backward_row(const floating* dy, const floating* x, const floating* w, floating* dx,
                               Py_ssize_t n, double mean, double rstd, bint center, bint has_w,
                               double* pdw, double* pdb, bint prefetch_next) noexcept nogil:
    # prefetch_next: the next row (at dy + n, x + n) exists; lanes.h prefetches it (no bits change)
    cdef double sg, sgx, mg, mgx
    if floating is float:
        lanes_grad_pf_f32(dy, w if has_w else NULL, x, dx, n, mean, rstd, &sg, &sgx)
    else:
        lanes_grad_pf_f64(dy, w if has_w else NULL, x, dx, n, mean, rstd, &sg, &sgx)
    mg = sg / n if center else 0.0
    mgx = sgx / n
    if floating is float:
        lanes_dx_f32(dy, w if has_w else NULL, x, dx, n, mean, rstd, mg, mgx, pdw, pdb,
                     dy + n if prefetch_next else NULL, x + n if prefetch_next else NULL)
    else:
        lanes_dx_f64(dy, w if has_w else NULL, x, dx, n, mean, rstd, mg, mgx, pdw, pdb,
                     dy + n if prefetch_next else NULL, x + n if prefetch_next else NULL)


cdef inline void _add_chunk(double* p, double* out, Py_ssize_t n, bint clear) noexcept nogil:
    """out += p (the column sums' step for one chunk's partials); clears p after if asked."""
    cdef Py_ssize_t j
    for j in range(n):
        out[j] += p[j]
    if clear:
        memset(p, 0, n * sizeof(double))


cdef inline void _sum_chunks(double* p, double* out, Py_ssize_t nchunks, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t c
    memset(out, 0, n * sizeof(double))
    for c in range(nchunks):
        _add_chunk(p + c * n, out, n, False)


cdef void _backward(const floating* dy, const floating* x, const floating* w, floating* dx,
                    double* dw, double* db, const double* mean, const double* rstd,
                    Py_ssize_t m, Py_ssize_t n, bint center, bint has_w,
                    bint want_dw, bint want_db, int nthreads) noexcept nogil:
    cdef Py_ssize_t nchunks = row_chunks(m), c, r
    cdef double* pdw = NULL
    cdef double* pdb = NULL
    if nthreads <= 1:
        # chunks in order, each chunk's partials added to dw/db as it ends: the operations of
        # _sum_chunks below in the same order, with one row of partials instead of nchunks
        # (256 x n doubles each: 8 MB at n = 4096, more traffic than the rows themselves)
        if want_dw:
            pdw = <double*>calloc(n + 1, sizeof(double))
            memset(dw, 0, n * sizeof(double))
        if want_db:
            pdb = <double*>calloc(n + 1, sizeof(double))
            memset(db, 0, n * sizeof(double))
        for c in range(nchunks):
            for r in range(c * m // nchunks, (c + 1) * m // nchunks):
                _backward_row(dy + r * n, x + r * n, w, dx + r * n, n, mean[r], rstd[r], center, has_w,
                              pdw, pdb, r + 1 < m)
            if want_dw:
                _add_chunk(pdw, dw, n, True)
            if want_db:
                _add_chunk(pdb, db, n, True)
        free(pdw)
        free(pdb)
        return
    # malloc, each chunk zeroing its own row: with calloc the fresh pages read as the shared
    # zero page, and the threads' first += to each replaced a mapped page (a TLB-flush IPI per
    # 4 KB page, costly in a VM: 256x4096 float32 on 2 threads took 30 ms, 0.9 ms on 1). A
    # memset right after malloc would not do: GCC turns the pair into calloc.
    if want_dw:
        pdw = <double*>malloc((nchunks * n + 1) * sizeof(double))
    if want_db:
        pdb = <double*>malloc((nchunks * n + 1) * sizeof(double))
    for c in prange(nchunks, num_threads=nthreads, schedule="dynamic"):
        if want_dw:
            memset(pdw + c * n, 0, n * sizeof(double))
        if want_db:
            memset(pdb + c * n, 0, n * sizeof(double))
        for r in range(c * m // nchunks, (c + 1) * m // nchunks):
            _backward_row(dy + r * n, x + r * n, w, dx + r * n, n, mean[r], rstd[r], center, has_w,
                          pdw + c * n if want_dw else NULL, pdb + c * n if want_db else NULL, r + 1 < m)
    # column sums of the chunk partials, chunk by chunk (rows of p are contiguous)
    if want_dw:
        _sum_chunks(pdw, dw, nchunks, n)
        free(pdw)
    if want_db:
        _sum_chunks(pdb, db, nchunks, n)
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


cdef inline bint _param_ok(object p, int typenum, Py_ssize_t n):
    """p is None, or a C-contiguous native 1-D array of typenum and length n."""
    if p is None:
        return True
    if type(p) is not cnp.ndarray:
        return False
    cdef cnp.ndarray a = <cnp.ndarray>p
    return (cnp.PyArray_TYPE(a) == typenum and cnp.PyArray_NDIM(a) == 1
            and cnp.PyArray_DIM(a, 0) == n and cnp.PyArray_IS_C_CONTIGUOUS(a)
            and cnp.PyArray_ISNOTSWAPPED(a))


cdef inline bint _disjoint(cnp.ndarray a, object p):
    """p (None or an array) shares no bytes with a."""
    if p is None:
        return True
    cdef char* ab = <char*>cnp.PyArray_DATA(a)
    cdef char* pb = <char*>cnp.PyArray_DATA(<cnp.ndarray>p)
    return ab + cnp.PyArray_NBYTES(a) <= pb or pb + cnp.PyArray_NBYTES(<cnp.ndarray>p) <= ab


cdef inline bint _out_ok(object out, cnp.ndarray x, object w, object b):
    """out is None, or a writeable C-contiguous native array like x that is x itself or
    shares no memory with it, and shares none with w and b (checked C-contiguous arrays)."""
    if out is None:
        return True
    if type(out) is not cnp.ndarray:
        return False
    cdef cnp.ndarray o = <cnp.ndarray>out
    cdef int d
    if out is not x:
        if (cnp.PyArray_TYPE(o) != cnp.PyArray_TYPE(x) or cnp.PyArray_NDIM(o) != cnp.PyArray_NDIM(x)
                or not cnp.PyArray_IS_C_CONTIGUOUS(o) or not cnp.PyArray_ISNOTSWAPPED(o)
                or not cnp.PyArray_ISWRITEABLE(o) or not _disjoint(o, x)):
            return False
        for d in range(cnp.PyArray_NDIM(x)):
            if cnp.PyArray_DIM(o, d) != cnp.PyArray_DIM(x, d):
                return False
    elif not cnp.PyArray_ISWRITEABLE(o):
        return False
    return _disjoint(o, w) and _disjoint(o, b)


def norm_forward_small(object x, object w, object b, object out, double eps, bint center,
                       Py_ssize_t max_size):
    """Entry for small inputs in the common case, for per-call latency: normalizes over the
    last axis of a C-contiguous native float array with fewer than ``max_size`` elements,
    into ``out`` (x itself, a disjoint array, or None: allocated here) with the float64
    statistics allocated here, single-threaded. Returns (y, mean, rstd), or None when the
    inputs are anything else (the caller then validates and runs the general path, which
    raises the errors)."""
    if type(x) is not cnp.ndarray:
        return None
    cdef cnp.ndarray xa = <cnp.ndarray>x
    cdef int t = cnp.PyArray_TYPE(xa)
    cdef int nd = cnp.PyArray_NDIM(xa)
    if ((t != cnp.NPY_FLOAT32 and t != cnp.NPY_FLOAT64) or nd == 0
            or not cnp.PyArray_IS_C_CONTIGUOUS(xa) or not cnp.PyArray_ISNOTSWAPPED(xa)):
        return None
    cdef Py_ssize_t size = cnp.PyArray_SIZE(xa), n = cnp.PyArray_DIM(xa, nd - 1)
    if size == 0 or size >= max_size or not eps >= 0.0:
        return None
    if (not _param_ok(w, t, n) or not _param_ok(b, t, n) or (w is None and b is not None)
            or not _out_ok(out, xa, w, b)):
        return None
    cdef cnp.npy_intp* dims = cnp.PyArray_DIMS(xa)
    cdef cnp.ndarray y = cnp.PyArray_EMPTY(nd, dims, t, 0) if out is None else <cnp.ndarray>out
    cdef cnp.ndarray mean = cnp.PyArray_EMPTY(nd - 1, dims, cnp.NPY_FLOAT64, 0)
    cdef cnp.ndarray rstd = cnp.PyArray_EMPTY(nd - 1, dims, cnp.NPY_FLOAT64, 0)
    cdef void* pw = NULL if w is None else cnp.PyArray_DATA(<cnp.ndarray>w)
    cdef void* pb = NULL if b is None else cnp.PyArray_DATA(<cnp.ndarray>b)
    cdef double* pm = <double*>cnp.PyArray_DATA(mean)
    cdef double* pr = <double*>cnp.PyArray_DATA(rstd)
    if t == cnp.NPY_FLOAT32:
        _forward[float](<float*>cnp.PyArray_DATA(xa), <float*>pw, <float*>pb,
                        <float*>cnp.PyArray_DATA(y), pm, pr, size // n, n, center,
                        w is not None, b is not None, eps, 1)
    else:
        _forward[double](<double*>cnp.PyArray_DATA(xa), <double*>pw, <double*>pb,
                         <double*>cnp.PyArray_DATA(y), pm, pr, size // n, n, center,
                         w is not None, b is not None, eps, 1)
    return y, mean, rstd
