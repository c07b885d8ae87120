# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Local and parameter normalization loops (LRN, Lp/weight normalization), Cython + OpenMP.

The same arithmetic, in the same order, as kernels/numba/local.py (see the determinism contract
there), so both backends agree bit for bit. LRN's square roots go through local_math.h (SIMD
intrinsics: gcc does not vectorize libm's sqrt without -fno-math-errno).
Arguments are already validated by fastnorm: C-contiguous arrays of one float dtype, float64
where the numba kernels take float64.
"""
from cython.parallel cimport prange
from libc.math cimport sqrt, pow, fabs
from libc.stdlib cimport malloc, free
cimport numpy as cnp

cnp.import_array()

cdef extern from "local_math.h" nogil:
    void lrn_apply_f32(const float* x, float* y, const float* d, Py_ssize_t n, int mode)
    void lrn_apply_f64(const double* x, double* y, const double* d, Py_ssize_t n, int mode)
    void lrn_grad_f32(double* S, double* Q, const float* x, const float* dy, Py_ssize_t n,
                      double k, double a, double beta, int mode)
    void lrn_grad_f64(double* S, double* Q, const double* x, const double* dy, Py_ssize_t n,
                      double k, double a, double beta, int mode)

ctypedef fused floating:
    float
    double

DEF TILE = 256
DEF COLS = 256


cdef extern from "lanes.h" nogil:
    double lanes_sqdev_f32(const float* x, Py_ssize_t n, double mean)
    double lanes_sqdev_f64(const double* x, Py_ssize_t n, double mean)
    void lanes_grad_f32(const float* dy, const float* w, const float* x, Py_ssize_t n,
                        double mean, double rstd, double* sg, double* sgx)
    void lanes_grad_f64(const double* dy, const double* w, const double* x, Py_ssize_t n,
                        double mean, double rstd, double* sg, double* sgx)


cdef inline Py_ssize_t n_chunks(Py_ssize_t units) noexcept nogil:
    return units if units < 256 else 256


# ---------------------------------------------------------------- LRN


cdef inline void _block(const floating* src, Py_ssize_t ld, bint square, Py_ssize_t base,
                        Py_ssize_t C, Py_ssize_t lo, Py_ssize_t size, Py_ssize_t t1,
                        double* suf, double* pre) noexcept nogil:
    """Suffix sums of the block [base, base + size) of the zero-padded channel axis into suf,
    prefix sums of the next block's first size - 1 positions into pre (kernels/numba/local.py
    _block); v(r, t) = src[r*ld + t], squared when square. suf, pre: size*TILE doubles."""
    cdef Py_ssize_t j, r, t
    cdef double v
    cdef const floating* s
    cdef double* out
    cdef double* prev
    j = size - 1
    while j >= 0:
        r = base + j - lo
        out = suf + j * TILE
        prev = suf + (j + 1) * TILE
        if 0 <= r < C:
            s = src + r * ld
            if j == size - 1:
                if square:
                    for t in range(t1):
                        v = <double>s[t]
                        out[t] = v * v
                else:
                    for t in range(t1):
                        out[t] = <double>s[t]
            else:
                if square:
                    for t in range(t1):
                        v = <double>s[t]
                        out[t] = v * v + prev[t]
                else:
                    for t in range(t1):
                        out[t] = <double>s[t] + prev[t]
        elif j == size - 1:
            for t in range(t1):
                out[t] = 0.0
        else:
            for t in range(t1):
                out[t] = prev[t]
        j -= 1
    for j in range(size - 1):
        r = base + size + j - lo
        out = pre + j * TILE
        prev = pre + (j - 1) * TILE
        if 0 <= r < C:
            s = src + r * ld
            if j == 0:
                if square:
                    for t in range(t1):
                        v = <double>s[t]
                        out[t] = v * v
                else:
                    for t in range(t1):
                        out[t] = <double>s[t]
            else:
                if square:
                    for t in range(t1):
                        v = <double>s[t]
                        out[t] = prev[t] + v * v
                else:
                    for t in range(t1):
                        out[t] = prev[t] + <double>s[t]
        elif j == 0:
            for t in range(t1):
                out[t] = 0.0
        else:
            for t in range(t1):
                out[t] = prev[t]


cdef inline void _window_row(Py_ssize_t j, Py_ssize_t t1, const double* suf, const double* pre,
                             double* d) noexcept nogil:
    cdef Py_ssize_t t
    cdef const double* a = suf + j * TILE
    cdef const double* b = pre + (j - 1) * TILE
    if j == 0:
        for t in range(t1):
            d[t] = a[t]
    else:
        for t in range(t1):
            d[t] = a[t] + b[t]


cdef inline void _window_sum(const floating* src, Py_ssize_t ld, bint square, double* dst,
                             Py_ssize_t C, Py_ssize_t lo, Py_ssize_t size, Py_ssize_t t1,
                             double* suf, double* pre) noexcept nogil:
    """dst[c*TILE + t] = sum over r in [c - lo, c - lo + size) of v(r, t) (see _block)."""
    cdef Py_ssize_t base = 0, j
    while base < C:
        _block(src, ld, square, base, C, lo, size, t1, suf, pre)
        j = 0
        while j < size and base + j < C:
            _window_row(j, t1, suf, pre, dst + (base + j) * TILE)
            j += 1
        base += size


cdef void _lrn_forward_chunk(Py_ssize_t ch, Py_ssize_t nchunks, const floating* x, floating* y,
                             Py_ssize_t N, Py_ssize_t C, Py_ssize_t inner, Py_ssize_t size,
                             Py_ssize_t lo, double a, double k, double beta, int mode) noexcept nogil:
    """y must not overlap x (the window still reads channels already written)."""
    cdef Py_ssize_t ntiles = (inner + TILE - 1) // TILE, units = N * ntiles
    cdef Py_ssize_t u, n, i0, t1, c, t, j, base
    cdef double* Sc = <double*>malloc(TILE * sizeof(double))
    cdef double* suf = <double*>malloc(size * TILE * sizeof(double))
    cdef double* pre = <double*>malloc(size * TILE * sizeof(double))
    cdef floating* Dt = <floating*>malloc(TILE * sizeof(floating))
    cdef floating s
    cdef const floating* xr
    cdef floating* yr
    for u in range(ch * units // nchunks, (ch + 1) * units // nchunks):
        n = u // ntiles
        i0 = (u % ntiles) * TILE
        t1 = TILE if TILE < inner - i0 else inner - i0
        base = 0
        while base < C:
            _block(x + n * C * inner + i0, inner, True, base, C, lo, size, t1, suf, pre)
            j = 0
            while j < size and base + j < C:
                c = base + j
                _window_row(j, t1, suf, pre, Sc)
                xr = x + (n * C + c) * inner + i0
                yr = y + (n * C + c) * inner + i0
                for t in range(t1):
                    Dt[t] = <floating>(k + a * Sc[t])
                if mode != 0:
                    if floating is float:
                        lrn_apply_f32(xr, yr, Dt, t1, mode)
                    else:
                        lrn_apply_f64(xr, yr, Dt, t1, mode)
                else:
                    for t in range(t1):
                        Dt[t] = <floating>pow(k + a * Sc[t], -beta)
                    for t in range(t1):
                        yr[t] = xr[t] * Dt[t]
                j += 1
            base += size
    free(Sc)
    free(suf)
    free(pre)
    free(Dt)


cdef void _lrn_backward_chunk(Py_ssize_t ch, Py_ssize_t nchunks, const floating* dy,
                              const floating* x, floating* dx, Py_ssize_t N, Py_ssize_t C,
                              Py_ssize_t inner, Py_ssize_t size, Py_ssize_t lo, double a,
                              double k, double beta, int mode) noexcept nogil:
    cdef Py_ssize_t ntiles = (inner + TILE - 1) // TILE, units = N * ntiles
    cdef Py_ssize_t u, n, i0, t1, c, t, row
    cdef double* S = <double*>malloc(C * TILE * sizeof(double))
    cdef double* Q = <double*>malloc(C * TILE * sizeof(double))
    cdef double* B = <double*>malloc(C * TILE * sizeof(double))
    cdef double* suf = <double*>malloc(size * TILE * sizeof(double))
    cdef double* pre = <double*>malloc(size * TILE * sizeof(double))
    cdef double c2 = 2.0 * a * beta
    for u in range(ch * units // nchunks, (ch + 1) * units // nchunks):
        n = u // ntiles
        i0 = (u % ntiles) * TILE
        t1 = TILE if TILE < inner - i0 else inner - i0
        _window_sum(x + n * C * inner + i0, inner, True, S, C, lo, size, t1, suf, pre)
        for c in range(C):
            row = (n * C + c) * inner + i0
            if floating is float:
                lrn_grad_f32(S + c * TILE, Q + c * TILE, x + row, dy + row, t1, k, a, beta, mode)
            else:
                lrn_grad_f64(S + c * TILE, Q + c * TILE, x + row, dy + row, t1, k, a, beta, mode)
        _window_sum[double](Q, TILE, False, B, C, size - 1 - lo, size, t1, suf, pre)
        for c in range(C):
            row = (n * C + c) * inner + i0
            for t in range(t1):
                dx[row + t] = <floating>(S[c * TILE + t] - (c2 * <double>x[row + t]) * B[c * TILE + t])
    free(S)
    free(Q)
    free(B)
    free(suf)
    free(pre)


def lrn_forward(cnp.ndarray x, cnp.ndarray y, Py_ssize_t size, Py_ssize_t lo, double a,
                double k, double beta, int mode, object one, int nthreads):
    """y = LRN(x) on x of shape (N, C, inner); see kernels/numba/local.py (``one`` is unused)."""
    cdef Py_ssize_t N = cnp.PyArray_DIM(x, 0), C = cnp.PyArray_DIM(x, 1), inner = cnp.PyArray_DIM(x, 2)
    cdef Py_ssize_t nchunks = n_chunks(N * ((inner + TILE - 1) // TILE)), ch
    cdef void* px = cnp.PyArray_DATA(x)
    cdef void* py = cnp.PyArray_DATA(y)
    cdef bint f32 = cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT32
    with nogil:
        if nthreads <= 1:
            for ch in range(nchunks):
                if f32:
                    _lrn_forward_chunk[float](ch, nchunks, <float*>px, <float*>py, N, C, inner, size, lo, a, k, beta, mode)
                else:
                    _lrn_forward_chunk[double](ch, nchunks, <double*>px, <double*>py, N, C, inner, size, lo, a, k, beta, mode)
        else:
            for ch in prange(nchunks, num_threads=nthreads, schedule="static"):
                if f32:
                    _lrn_forward_chunk[float](ch, nchunks, <float*>px, <float*>py, N, C, inner, size, lo, a, k, beta, mode)
                else:
                    _lrn_forward_chunk[double](ch, nchunks, <double*>px, <double*>py, N, C, inner, size, lo, a, k, beta, mode)


def lrn_backward(cnp.ndarray dy, cnp.ndarray x, cnp.ndarray dx, Py_ssize_t size, Py_ssize_t lo,
                 double a, double k, double beta, int mode, int nthreads):
    """dx of LRN on (N, C, inner); see kernels/numba/local.py."""
    cdef Py_ssize_t N = cnp.PyArray_DIM(x, 0), C = cnp.PyArray_DIM(x, 1), inner = cnp.PyArray_DIM(x, 2)
    cdef Py_ssize_t nchunks = n_chunks(N * ((inner + TILE - 1) // TILE)), ch
    cdef void* pdy = cnp.PyArray_DATA(dy)
    cdef void* px = cnp.PyArray_DATA(x)
    cdef void* pdx = cnp.PyArray_DATA(dx)
    cdef bint f32 = cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT32
    with nogil:
        if nthreads <= 1:
            for ch in range(nchunks):
                if f32:
                    _lrn_backward_chunk[float](ch, nchunks, <float*>pdy, <float*>px, <float*>pdx, N, C, inner, size, lo, a, k, beta, mode)
                else:
                    _lrn_backward_chunk[double](ch, nchunks, <double*>pdy, <double*>px, <double*>pdx, N, C, inner, size, lo, a, k, beta, mode)
        else:
            for ch in prange(nchunks, num_threads=nthreads, schedule="static"):
                if f32:
                    _lrn_backward_chunk[float](ch, nchunks, <float*>pdy, <float*>px, <float*>pdx, N, C, inner, size, lo, a, k, beta, mode)
                else:
                    _lrn_backward_chunk[double](ch, nchunks, <double*>pdy, <double*>px, <double*>pdx, N, C, inner, size, lo, a, k, beta, mode)


# ---------------------------------------------------------------- Lp norms (rows)


cdef inline double _combine(const double* acc) noexcept nogil:
    cdef double v0 = (acc[0] + acc[8]) + (acc[16] + acc[24])
    cdef double v1 = (acc[1] + acc[9]) + (acc[17] + acc[25])
    cdef double v2 = (acc[2] + acc[10]) + (acc[18] + acc[26])
    cdef double v3 = (acc[3] + acc[11]) + (acc[19] + acc[27])
    cdef double v4 = (acc[4] + acc[12]) + (acc[20] + acc[28])
    cdef double v5 = (acc[5] + acc[13]) + (acc[21] + acc[29])
    cdef double v6 = (acc[6] + acc[14]) + (acc[22] + acc[30])
    cdef double v7 = (acc[7] + acc[15]) + (acc[23] + acc[31])
    return ((v0 + v1) + (v2 + v3)) + ((v4 + v5) + (v6 + v7))


cdef inline double _row_sum(const floating* x, Py_ssize_t n, double p, int mode) noexcept nogil:
    cdef Py_ssize_t i, j, n32 = n - n % 32
    cdef double acc[32]
    cdef double s, m, v
    if mode == 3:
        m = 0.0
        for i in range(n):
            v = fabs(<double>x[i])
            if v > m or v != v:
                m = v
        return m
    if mode == 2:
        if floating is float:
            return lanes_sqdev_f32(x, n, 0.0)
        else:
            return lanes_sqdev_f64(x, n, 0.0)
    for j in range(32):
        acc[j] = 0.0
    if mode == 1:
        for i in range(0, n32, 32):
            for j in range(32):
                acc[j] += fabs(<double>x[i + j])
    else:
        for i in range(0, n32, 32):
            for j in range(32):
                acc[j] += pow(fabs(<double>x[i + j]), p)
    s = _combine(acc)
    for i in range(n32, n):
        if mode == 1:
            s += fabs(<double>x[i])
        else:
            s += pow(fabs(<double>x[i]), p)
    return s


cdef inline double _root(double s, double p, int mode) noexcept nogil:
    if mode == 2:
        return sqrt(s)
    if mode == 0:
        return pow(s, 1.0 / p)
    return s


cdef inline double _row_dot(const floating* dy, const floating* x, Py_ssize_t n) noexcept nogil:
    cdef double sg, sgx
    if floating is float:
        lanes_grad_f32(dy, NULL, x, n, 0.0, 1.0, &sg, &sgx)
    else:
        lanes_grad_f64(dy, NULL, x, n, 0.0, 1.0, &sg, &sgx)
    return sgx


cdef inline double _clamp(double nrm, double eps) noexcept nogil:
    return eps if nrm < eps else nrm


cdef void _lp_rows_chunk(Py_ssize_t ch, Py_ssize_t nchunks, const floating* x, const double* g,
                         floating* y, double* norms, Py_ssize_t m, Py_ssize_t n, double p,
                         int mode, double eps, bint has_g, bint write_y) noexcept nogil:
    cdef Py_ssize_t r, i
    cdef double nrm, f
    for r in range(ch * m // nchunks, (ch + 1) * m // nchunks):
        nrm = _root(_row_sum(x + r * n, n, p, mode), p, mode)
        norms[r] = nrm
        if write_y:
            f = (g[r] if has_g else 1.0) / _clamp(nrm, eps)
            for i in range(n):
                y[r * n + i] = <floating>(x[r * n + i] * f)


cdef inline double _dnorm_scale(double nrm, double d, double dot, double p, int mode,
                                double eps, double gr, double cnt) noexcept nogil:
    cdef double h
    if not nrm >= eps or nrm == 0.0:
        return 0.0
    h = gr * (dot / (d * d))
    if mode == 2:
        return h / nrm
    if mode == 0:
        return h / pow(nrm, p - 1.0)
    if mode == 3:
        return h / cnt
    return h


cdef inline double _dnorm_part(double v, double nrm, double p, int mode) noexcept nogil:
    cdef double s
    if mode == 2:
        return v
    s = 1.0 if v > 0.0 else (-1.0 if v < 0.0 else 0.0)
    if mode == 1:
        return s
    if mode == 3:
        return s if fabs(v) == nrm else 0.0
    return s * pow(fabs(v), p - 1.0)


cdef void _lp_rows_backward_chunk(Py_ssize_t ch, Py_ssize_t nchunks, const floating* dy,
                                  const floating* x, const double* g, floating* dx,
                                  double* norms, double* dots, Py_ssize_t m, Py_ssize_t n,
                                  double p, int mode, double eps, bint has_g) noexcept nogil:
    cdef Py_ssize_t r, i, o
    cdef double nrm, dot, cnt, gr, d, f, h
    for r in range(ch * m // nchunks, (ch + 1) * m // nchunks):
        o = r * n
        nrm = _root(_row_sum(x + o, n, p, mode), p, mode)
        dot = _row_dot(dy + o, x + o, n)
        norms[r] = nrm
        dots[r] = dot
        cnt = 0.0
        if mode == 3:
            for i in range(n):
                if fabs(<double>x[o + i]) == nrm:
                    cnt += 1.0
        gr = g[r] if has_g else 1.0
        d = _clamp(nrm, eps)
        f = gr / d
        h = _dnorm_scale(nrm, d, dot, p, mode, eps, gr, cnt)
        if mode == 2:
            for i in range(n):
                dx[o + i] = <floating>(<double>dy[o + i] * f - <double>x[o + i] * h)
        else:
            for i in range(n):
                dx[o + i] = <floating>(<double>dy[o + i] * f - _dnorm_part(<double>x[o + i], nrm, p, mode) * h)


def lp_rows(cnp.ndarray x, cnp.ndarray g, cnp.ndarray y, cnp.ndarray norms, double p, int mode,
            double eps, bint has_g, bint write_y, int nthreads):
    """Row p-norms of x (m, n) into norms; y = x * g / max(norm, eps) when write_y."""
    cdef Py_ssize_t m = cnp.PyArray_DIM(x, 0), n = cnp.PyArray_DIM(x, 1)
    cdef Py_ssize_t nchunks = n_chunks(m), ch
    cdef void* px = cnp.PyArray_DATA(x)
    cdef void* py = cnp.PyArray_DATA(y)
    cdef double* pg = <double*>cnp.PyArray_DATA(g)
    cdef double* pn = <double*>cnp.PyArray_DATA(norms)
    cdef bint f32 = cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT32
    with nogil:
        if nthreads <= 1:
            for ch in range(nchunks):
                if f32:
                    _lp_rows_chunk[float](ch, nchunks, <float*>px, pg, <float*>py, pn, m, n, p, mode, eps, has_g, write_y)
                else:
                    _lp_rows_chunk[double](ch, nchunks, <double*>px, pg, <double*>py, pn, m, n, p, mode, eps, has_g, write_y)
        else:
            for ch in prange(nchunks, num_threads=nthreads, schedule="static"):
                if f32:
                    _lp_rows_chunk[float](ch, nchunks, <float*>px, pg, <float*>py, pn, m, n, p, mode, eps, has_g, write_y)
                else:
                    _lp_rows_chunk[double](ch, nchunks, <double*>px, pg, <double*>py, pn, m, n, p, mode, eps, has_g, write_y)


def lp_rows_backward(cnp.ndarray dy, cnp.ndarray x, cnp.ndarray g, cnp.ndarray dx,
                     cnp.ndarray norms, cnp.ndarray dots, double p, int mode, double eps,
                     bint has_g, int nthreads):
    """dx of y = x * g / max(||x||_p, eps) per row; norms and dots (sum dy * x) per row."""
    cdef Py_ssize_t m = cnp.PyArray_DIM(x, 0), n = cnp.PyArray_DIM(x, 1)
    cdef Py_ssize_t nchunks = n_chunks(m), ch
    cdef void* pdy = cnp.PyArray_DATA(dy)
    cdef void* px = cnp.PyArray_DATA(x)
    cdef void* pdx = cnp.PyArray_DATA(dx)
    cdef double* pg = <double*>cnp.PyArray_DATA(g)
    cdef double* pn = <double*>cnp.PyArray_DATA(norms)
    cdef double* pd = <double*>cnp.PyArray_DATA(dots)
    cdef bint f32 = cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT32
    with nogil:
        if nthreads <= 1:
            for ch in range(nchunks):
                if f32:
                    _lp_rows_backward_chunk[float](ch, nchunks, <float*>pdy, <float*>px, pg, <float*>pdx, pn, pd, m, n, p, mode, eps, has_g)
                else:
                    _lp_rows_backward_chunk[double](ch, nchunks, <double*>pdy, <double*>px, pg, <double*>pdx, pn, pd, m, n, p, mode, eps, has_g)
        else:
            for ch in prange(nchunks, num_threads=nthreads, schedule="static"):
                if f32:
                    _lp_rows_backward_chunk[float](ch, nchunks, <float*>pdy, <float*>px, pg, <float*>pdx, pn, pd, m, n, p, mode, eps, has_g)
                else:
                    _lp_rows_backward_chunk[double](ch, nchunks, <double*>pdy, <double*>px, pg, <double*>pdx, pn, pd, m, n, p, mode, eps, has_g)


# ---------------------------------------------------------------- Lp norms (columns)


cdef inline void _col_norms(const floating* xo, Py_ssize_t n, Py_ssize_t inner, Py_ssize_t i0,
                            Py_ssize_t t1, double p, int mode, double* acc) noexcept nogil:
    cdef Py_ssize_t k, t
    cdef double v
    cdef const floating* row
    for t in range(t1):
        acc[t] = 0.0
    for k in range(n):
        row = xo + k * inner + i0
        if mode == 2:
            for t in range(t1):
                v = <double>row[t]
                acc[t] += v * v
        elif mode == 1:
            for t in range(t1):
                acc[t] += fabs(<double>row[t])
        elif mode == 3:
            for t in range(t1):
                v = fabs(<double>row[t])
                if v > acc[t] or v != v:
                    acc[t] = v
        else:
            for t in range(t1):
                acc[t] += pow(fabs(<double>row[t]), p)
    for t in range(t1):
        acc[t] = _root(acc[t], p, mode)


cdef void _lp_cols_chunk(Py_ssize_t ch, Py_ssize_t nchunks, const floating* x, const double* g,
                         floating* y, double* norms, Py_ssize_t outer, Py_ssize_t n,
                         Py_ssize_t inner, double p, int mode, double eps, bint has_g,
                         bint write_y) noexcept nogil:
    cdef Py_ssize_t nt = (inner + COLS - 1) // COLS, units = outer * nt
    cdef Py_ssize_t u, o, i0, t1, t, k, base
    cdef double acc[COLS]
    cdef double f[COLS]
    for u in range(ch * units // nchunks, (ch + 1) * units // nchunks):
        o = u // nt
        i0 = (u % nt) * COLS
        t1 = COLS if COLS < inner - i0 else inner - i0
        _col_norms(x + o * n * inner, n, inner, i0, t1, p, mode, acc)
        for t in range(t1):
            norms[o * inner + i0 + t] = acc[t]
            f[t] = (g[o * inner + i0 + t] if has_g else 1.0) / _clamp(acc[t], eps)
        if write_y:
            for k in range(n):
                base = (o * n + k) * inner + i0
                for t in range(t1):
                    y[base + t] = <floating>(x[base + t] * f[t])


cdef void _lp_cols_backward_chunk(Py_ssize_t ch, Py_ssize_t nchunks, const floating* dy,
                                  const floating* x, const double* g, floating* dx,
                                  double* norms, double* dots, Py_ssize_t outer, Py_ssize_t n,
                                  Py_ssize_t inner, double p, int mode, double eps,
                                  bint has_g) noexcept nogil:
    cdef Py_ssize_t nt = (inner + COLS - 1) // COLS, units = outer * nt
    cdef Py_ssize_t u, o, i0, t1, t, k, base
    cdef double acc[COLS]
    cdef double dt[COLS]
    cdef double cnt[COLS]
    cdef double f[COLS]
    cdef double h[COLS]
    cdef double nrm, gr, d
    for u in range(ch * units // nchunks, (ch + 1) * units // nchunks):
        o = u // nt
        i0 = (u % nt) * COLS
        t1 = COLS if COLS < inner - i0 else inner - i0
        _col_norms(x + o * n * inner, n, inner, i0, t1, p, mode, acc)
        for t in range(t1):
            dt[t] = 0.0
            cnt[t] = 0.0
        for k in range(n):
            base = (o * n + k) * inner + i0
            for t in range(t1):
                dt[t] += <double>dy[base + t] * <double>x[base + t]
            if mode == 3:
                for t in range(t1):
                    if fabs(<double>x[base + t]) == acc[t]:
                        cnt[t] += 1.0
        for t in range(t1):
            nrm = acc[t]
            gr = g[o * inner + i0 + t] if has_g else 1.0
            d = _clamp(nrm, eps)
            f[t] = gr / d
            h[t] = _dnorm_scale(nrm, d, dt[t], p, mode, eps, gr, cnt[t])
            norms[o * inner + i0 + t] = nrm
            dots[o * inner + i0 + t] = dt[t]
        for k in range(n):
            base = (o * n + k) * inner + i0
            if mode == 2:
                for t in range(t1):
                    dx[base + t] = <floating>(<double>dy[base + t] * f[t] - <double>x[base + t] * h[t])
            else:
                for t in range(t1):
                    dx[base + t] = <floating>(<double>dy[base + t] * f[t]
                                              - _dnorm_part(<double>x[base + t], acc[t], p, mode) * h[t])


def lp_cols(cnp.ndarray x, cnp.ndarray g, cnp.ndarray y, cnp.ndarray norms, double p, int mode,
            double eps, bint has_g, bint write_y, int nthreads):
    """p-norms over axis 1 of x (outer, n, inner) into norms (outer, inner); y as lp_rows."""
    cdef Py_ssize_t outer = cnp.PyArray_DIM(x, 0), n = cnp.PyArray_DIM(x, 1), inner = cnp.PyArray_DIM(x, 2)
    cdef Py_ssize_t nchunks = n_chunks(outer * ((inner + COLS - 1) // COLS)), ch
    cdef void* px = cnp.PyArray_DATA(x)
    cdef void* py = cnp.PyArray_DATA(y)
    cdef double* pg = <double*>cnp.PyArray_DATA(g)
    cdef double* pn = <double*>cnp.PyArray_DATA(norms)
    cdef bint f32 = cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT32
    with nogil:
        if nthreads <= 1:
            for ch in range(nchunks):
                if f32:
                    _lp_cols_chunk[float](ch, nchunks, <float*>px, pg, <float*>py, pn, outer, n, inner, p, mode, eps, has_g, write_y)
                else:
                    _lp_cols_chunk[double](ch, nchunks, <double*>px, pg, <double*>py, pn, outer, n, inner, p, mode, eps, has_g, write_y)
        else:
            for ch in prange(nchunks, num_threads=nthreads, schedule="static"):
                if f32:
                    _lp_cols_chunk[float](ch, nchunks, <float*>px, pg, <float*>py, pn, outer, n, inner, p, mode, eps, has_g, write_y)
                else:
                    _lp_cols_chunk[double](ch, nchunks, <double*>px, pg, <double*>py, pn, outer, n, inner, p, mode, eps, has_g, write_y)


def lp_cols_backward(cnp.ndarray dy, cnp.ndarray x, cnp.ndarray g, cnp.ndarray dx,
                     cnp.ndarray norms, cnp.ndarray dots, double p, int mode, double eps,
                     bint has_g, int nthreads):
    """dx of lp_cols' y; norms and dots (sum dy * x) per (outer, inner)."""
    cdef Py_ssize_t outer = cnp.PyArray_DIM(x, 0), n = cnp.PyArray_DIM(x, 1), inner = cnp.PyArray_DIM(x, 2)
    cdef Py_ssize_t nchunks = n_chunks(outer * ((inner + COLS - 1) // COLS)), ch
    cdef void* pdy = cnp.PyArray_DATA(dy)
    cdef void* px = cnp.PyArray_DATA(x)
    cdef void* pdx = cnp.PyArray_DATA(dx)
    cdef double* pg = <double*>cnp.PyArray_DATA(g)
    cdef double* pn = <double*>cnp.PyArray_DATA(norms)
    cdef double* pd = <double*>cnp.PyArray_DATA(dots)
    cdef bint f32 = cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT32
    with nogil:
        if nthreads <= 1:
            for ch in range(nchunks):
                if f32:
                    _lp_cols_backward_chunk[float](ch, nchunks, <float*>pdy, <float*>px, pg, <float*>pdx, pn, pd, outer, n, inner, p, mode, eps, has_g)
                else:
                    _lp_cols_backward_chunk[double](ch, nchunks, <double*>pdy, <double*>px, pg, <double*>pdx, pn, pd, outer, n, inner, p, mode, eps, has_g)
        else:
            for ch in prange(nchunks, num_threads=nthreads, schedule="static"):
                if f32:
                    _lp_cols_backward_chunk[float](ch, nchunks, <float*>pdy, <float*>px, pg, <float*>pdx, pn, pd, outer, n, inner, p, mode, eps, has_g)
                else:
                    _lp_cols_backward_chunk[double](ch, nchunks, <double*>pdy, <double*>px, pg, <double*>pdx, pn, pd, outer, n, inner, p, mode, eps, has_g)


# ---------------------------------------------------------------- cosine_linear's epilogue


cdef void _scale_outer_chunk(Py_ssize_t ch, Py_ssize_t nchunks, const floating* z, const double* a,
                             const double* b, floating* y, Py_ssize_t m, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t r, j
    cdef double ar
    for r in range(ch * m // nchunks, (ch + 1) * m // nchunks):
        ar = a[r]
        for j in range(n):
            y[r * n + j] = <floating>(z[r * n + j] * (ar * b[j]))


def scale_outer(cnp.ndarray z, cnp.ndarray a, cnp.ndarray b, cnp.ndarray y, int nthreads):
    """y[i, j] = z[i, j] * (a[i] * b[j]) in float64, rounded to y's dtype."""
    cdef Py_ssize_t m = cnp.PyArray_DIM(z, 0), n = cnp.PyArray_DIM(z, 1)
    cdef Py_ssize_t nchunks = n_chunks(m), ch
    cdef void* pz = cnp.PyArray_DATA(z)
    cdef void* py = cnp.PyArray_DATA(y)
    cdef double* pa = <double*>cnp.PyArray_DATA(a)
    cdef double* pb = <double*>cnp.PyArray_DATA(b)
    cdef bint f32 = cnp.PyArray_TYPE(z) == cnp.NPY_FLOAT32
    with nogil:
        if nthreads <= 1:
            for ch in range(nchunks):
                if f32:
                    _scale_outer_chunk[float](ch, nchunks, <float*>pz, pa, pb, <float*>py, m, n)
                else:
                    _scale_outer_chunk[double](ch, nchunks, <double*>pz, pa, pb, <double*>py, m, n)
        else:
            for ch in prange(nchunks, num_threads=nthreads, schedule="static"):
                if f32:
                    _scale_outer_chunk[float](ch, nchunks, <float*>pz, pa, pb, <float*>py, m, n)
                else:
                    _scale_outer_chunk[double](ch, nchunks, <double*>pz, pa, pb, <double*>py, m, n)
