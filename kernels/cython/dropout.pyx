# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Counter-based random numbers (Philox4x32-10) and the loops built on them, Cython + OpenMP.

The same stream, chunks and arithmetic as kernels/numba/dropout.py (see its docstring), so both
backends give the same bits and the same results; the Philox tiles are in philox.h. Arguments
are validated by fastnorm: 1-D C-contiguous arrays, x/y of one float dtype.
"""
from cython.parallel cimport prange
from libc.math cimport pow, fabs
from libc.stdint cimport int64_t, uint8_t, uint32_t
cimport numpy as cnp

cnp.import_array()

ctypedef fused floating:
    float
    double

cdef extern from "divmath.h" nogil:
    void dm_normals(const uint32_t* w, Py_ssize_t j0, Py_ssize_t j1, double* z)

cdef extern from "philox.h" nogil:
    void philox_tile(int64_t t, uint32_t stream, uint32_t k0, uint32_t k1, uint32_t r[4][64])
    void philox_dropout_f32(const float* x, float* y, const uint32_t* rf, Py_ssize_t j0,
                            Py_ssize_t j1, uint32_t thr, float scale, int stream_store)
    void philox_dropout_f64(const double* x, double* y, const uint32_t* rf, Py_ssize_t j0,
                            Py_ssize_t j1, uint32_t thr, double scale, int stream_store)
    void philox_sfence()

DEF CHUNK_TILES = 64
DEF REDUCE_CHUNK = 65536
# outputs at least this large (elements) bypass the cache (non-temporal stores): they would
# not stay there anyway, and the stores then skip reading the destination first
DEF STREAM_MIN = 1 << 20
cdef double TWO_M32 = 2.0 ** -32


cdef inline int64_t _nchunks(int64_t offset, int64_t n) noexcept nogil:
    if n == 0:
        return 0
    cdef int64_t ntiles = ((offset + n - 1) >> 8) - (offset >> 8) + 1
    return (ntiles + CHUNK_TILES - 1) // CHUNK_TILES


cdef inline void _span(int64_t c, int64_t offset, int64_t n, int64_t* t0, int64_t* t1) noexcept nogil:
    t0[0] = (offset >> 8) + c * CHUNK_TILES
    cdef int64_t last = ((offset + n - 1) >> 8) + 1
    t1[0] = t0[0] + CHUNK_TILES if t0[0] + CHUNK_TILES < last else last


cdef inline void _overlap(int64_t t, int64_t offset, int64_t n, int64_t* j0, int64_t* j1,
                          int64_t* d) noexcept nogil:
    cdef int64_t base = t << 8
    j0[0] = offset - base if offset - base > 0 else 0
    j1[0] = offset + n - base if offset + n - base < 256 else 256
    d[0] = base - offset


# ---------------------------------------------------------------- chunk bodies

cdef void _bits_chunk(int64_t c, uint32_t* out, int64_t n, int64_t offset, uint32_t k0,
                      uint32_t k1, uint32_t stream) noexcept nogil:
    cdef uint32_t r[4][64]
    cdef uint32_t* rf = &r[0][0]
    cdef int64_t t0, t1, t, j0, j1, d, j
    _span(c, offset, n, &t0, &t1)
    for t in range(t0, t1):
        philox_tile(t, stream, k0, k1, r)
        _overlap(t, offset, n, &j0, &j1, &d)
        for j in range(j0, j1):
            out[j + d] = rf[j]


cdef void _mask_chunk(int64_t c, uint8_t* out, int64_t n, int64_t offset, uint32_t k0,
                      uint32_t k1, uint32_t thr) noexcept nogil:
    cdef uint32_t r[4][64]
    cdef uint32_t* rf = &r[0][0]
    cdef int64_t t0, t1, t, j0, j1, d, j
    _span(c, offset, n, &t0, &t1)
    for t in range(t0, t1):
        philox_tile(t, 0, k0, k1, r)
        _overlap(t, offset, n, &j0, &j1, &d)
        for j in range(j0, j1):
            out[j + d] = rf[j] >= thr


cdef void _dropout_chunk(int64_t c, const floating* x, floating* y, int64_t n, int64_t offset,
                         uint32_t k0, uint32_t k1, uint32_t thr, floating scale) noexcept nogil:
    cdef uint32_t r[4][64]
    cdef int64_t t0, t1, t, j0, j1, d
    cdef int stream_store = n >= STREAM_MIN
    _span(c, offset, n, &t0, &t1)
    for t in range(t0, t1):
        philox_tile(t, 0, k0, k1, r)
        _overlap(t, offset, n, &j0, &j1, &d)
        if floating is float:
            philox_dropout_f32(x + d, y + d, &r[0][0], j0, j1, thr, scale, stream_store)
        else:
            philox_dropout_f64(x + d, y + d, &r[0][0], j0, j1, thr, scale, stream_store)
    if stream_store:
        philox_sfence()


cdef void _normal_chunk(int64_t c, const floating* x, floating* y, int64_t n, int64_t offset,
                        uint32_t k0, uint32_t k1, double a, double b, int mode) noexcept nogil:
    cdef uint32_t r[4][64]
    cdef uint32_t* rf = &r[0][0]
    cdef int64_t t0, t1, t, j0, j1, d, j, i
    cdef double z[128]
    _span(c, 2 * offset, 2 * n, &t0, &t1)
    for t in range(t0, t1):
        philox_tile(t, 1, k0, k1, r)
        _overlap(t, 2 * offset, 2 * n, &j0, &j1, &d)
        dm_normals(rf, j0 >> 1, j1 >> 1, z)  # the normals of words [j0, j1) (Box-Muller)
        for j in range(j0 >> 1, j1 >> 1):
            i = j + (d >> 1)
            if mode == 0:
                y[i] = <floating>(a + b * z[j])
            else:
                y[i] = <floating>(x[i] * (a + b * z[j]))


cdef void _uniform_chunk(int64_t c, floating* y, int64_t n, int64_t offset, uint32_t k0,
                         uint32_t k1, double low, double width) noexcept nogil:
    cdef uint32_t r[4][64]
    cdef uint32_t* rf = &r[0][0]
    cdef int64_t t0, t1, t, j0, j1, d, j
    _span(c, offset, n, &t0, &t1)
    for t in range(t0, t1):
        philox_tile(t, 0, k0, k1, r)
        _overlap(t, offset, n, &j0, &j1, &d)
        for j in range(j0, j1):
            y[j + d] = <floating>(low + width * (<double>rf[j] * TWO_M32))


# ---------------------------------------------------------------- entry points

def random_bits(cnp.ndarray out, int64_t offset, uint32_t k0, uint32_t k1, uint32_t stream, int nthreads):
    """out[i] = bits of element offset + i of ``stream`` (out: uint32)."""
    cdef int64_t n = cnp.PyArray_DIM(out, 0), c, nc = _nchunks(offset, n)
    cdef uint32_t* p = <uint32_t*>cnp.PyArray_DATA(out)
    with nogil:
        if nthreads <= 1:
            for c in range(nc):
                _bits_chunk(c, p, n, offset, k0, k1, stream)
        else:
            for c in prange(nc, num_threads=nthreads, schedule="dynamic"):
                _bits_chunk(c, p, n, offset, k0, k1, stream)


def dropout_mask(cnp.ndarray out, int64_t offset, uint32_t k0, uint32_t k1, uint32_t thr, int nthreads):
    """out[i] = bits(offset + i) >= thr (out: bool)."""
    cdef int64_t n = cnp.PyArray_DIM(out, 0), c, nc = _nchunks(offset, n)
    cdef uint8_t* p = <uint8_t*>cnp.PyArray_DATA(out)
    with nogil:
        if nthreads <= 1:
            for c in range(nc):
                _mask_chunk(c, p, n, offset, k0, k1, thr)
        else:
            for c in prange(nc, num_threads=nthreads, schedule="dynamic"):
                _mask_chunk(c, p, n, offset, k0, k1, thr)


def dropout_apply(cnp.ndarray x, cnp.ndarray y, int64_t offset, uint32_t k0, uint32_t k1,
                  uint32_t thr, double scale, int nthreads):
    """y = x * (scale if bits >= thr else 0), scale rounded to x's dtype."""
    cdef int64_t n = cnp.PyArray_DIM(x, 0), c, nc = _nchunks(offset, n)
    cdef void* px = cnp.PyArray_DATA(x)
    cdef void* py = cnp.PyArray_DATA(y)
    if cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT32:
        with nogil:
            if nthreads <= 1:
                for c in range(nc):
                    _dropout_chunk[float](c, <float*>px, <float*>py, n, offset, k0, k1, thr, <float>scale)
            else:
                for c in prange(nc, num_threads=nthreads, schedule="dynamic"):
                    _dropout_chunk[float](c, <float*>px, <float*>py, n, offset, k0, k1, thr, <float>scale)
    else:
        with nogil:
            if nthreads <= 1:
                for c in range(nc):
                    _dropout_chunk[double](c, <double*>px, <double*>py, n, offset, k0, k1, thr, scale)
            else:
                for c in prange(nc, num_threads=nthreads, schedule="dynamic"):
                    _dropout_chunk[double](c, <double*>px, <double*>py, n, offset, k0, k1, thr, scale)


def normal_apply(cnp.ndarray x, cnp.ndarray y, int64_t offset, uint32_t k0, uint32_t k1,
                 double a, double b, int mode, int nthreads):
    """mode 0: y = a + b z; mode 1: y = x (a + b z); z the normals of stream 1."""
    cdef int64_t n = cnp.PyArray_DIM(y, 0), c, nc = _nchunks(2 * offset, 2 * n)
    cdef void* px = cnp.PyArray_DATA(x)
    cdef void* py = cnp.PyArray_DATA(y)
    if cnp.PyArray_TYPE(y) == cnp.NPY_FLOAT32:
        with nogil:
            if nthreads <= 1:
                for c in range(nc):
                    _normal_chunk[float](c, <float*>px, <float*>py, n, offset, k0, k1, a, b, mode)
            else:
                for c in prange(nc, num_threads=nthreads, schedule="dynamic"):
                    _normal_chunk[float](c, <float*>px, <float*>py, n, offset, k0, k1, a, b, mode)
    else:
        with nogil:
            if nthreads <= 1:
                for c in range(nc):
                    _normal_chunk[double](c, <double*>px, <double*>py, n, offset, k0, k1, a, b, mode)
            else:
                for c in prange(nc, num_threads=nthreads, schedule="dynamic"):
                    _normal_chunk[double](c, <double*>px, <double*>py, n, offset, k0, k1, a, b, mode)


def uniform_fill(cnp.ndarray y, int64_t offset, uint32_t k0, uint32_t k1, double low,
                 double width, int nthreads):
    """y = low + width * u, u = bits * 2^-32."""
    cdef int64_t n = cnp.PyArray_DIM(y, 0), c, nc = _nchunks(offset, n)
    cdef void* py = cnp.PyArray_DATA(y)
    if cnp.PyArray_TYPE(y) == cnp.NPY_FLOAT32:
        with nogil:
            if nthreads <= 1:
                for c in range(nc):
                    _uniform_chunk[float](c, <float*>py, n, offset, k0, k1, low, width)
            else:
                for c in prange(nc, num_threads=nthreads, schedule="dynamic"):
                    _uniform_chunk[float](c, <float*>py, n, offset, k0, k1, low, width)
    else:
        with nogil:
            if nthreads <= 1:
                for c in range(nc):
                    _uniform_chunk[double](c, <double*>py, n, offset, k0, k1, low, width)
            else:
                for c in prange(nc, num_threads=nthreads, schedule="dynamic"):
                    _uniform_chunk[double](c, <double*>py, n, offset, k0, k1, low, width)


# ---------------------------------------------------------------- norms of arrays

cdef double _reduce_block(const floating* x, int64_t lo, int64_t hi, int kind, double p) noexcept nogil:
    cdef double acc[32]
    cdef double v, s
    cdef double v0, v1, v2, v3, v4, v5, v6, v7
    cdef int64_t i, j, n32 = lo + (hi - lo) - (hi - lo) % 32
    for j in range(32):
        acc[j] = 0.0
    i = lo
    while i < n32:
        for j in range(32):
            v = fabs(<double>x[i + j])
            if kind == 0:
                acc[j] += v
            elif kind == 1:
                acc[j] += v * v
            elif kind == 2:
                if not v <= acc[j]:
                    acc[j] = v
            else:
                acc[j] += pow(v, p)
        i += 32
    if kind == 2:
        s = 0.0
        for j in range(32):
            if not acc[j] <= s:
                s = acc[j]
        for i in range(n32, hi):
            v = fabs(<double>x[i])
            if not v <= s:
                s = v
        return s
    v0 = (acc[0] + acc[8]) + (acc[16] + acc[24])
    v1 = (acc[1] + acc[9]) + (acc[17] + acc[25])
    v2 = (acc[2] + acc[10]) + (acc[18] + acc[26])
    v3 = (acc[3] + acc[11]) + (acc[19] + acc[27])
    v4 = (acc[4] + acc[12]) + (acc[20] + acc[28])
    v5 = (acc[5] + acc[13]) + (acc[21] + acc[29])
    v6 = (acc[6] + acc[14]) + (acc[22] + acc[30])
    v7 = (acc[7] + acc[15]) + (acc[23] + acc[31])
    s = ((v0 + v1) + (v2 + v3)) + ((v4 + v5) + (v6 + v7))
    for i in range(n32, hi):
        v = fabs(<double>x[i])
        if kind == 0:
            s += v
        elif kind == 1:
            s += v * v
        else:
            s += pow(v, p)
    return s


def reduce_partials(cnp.ndarray x, cnp.ndarray partials, int kind, double p, int nthreads):
    """partials[c] = the float64 reduction ``kind`` of x's chunk c (REDUCE_CHUNK elements)."""
    cdef int64_t n = cnp.PyArray_DIM(x, 0), c, nc = cnp.PyArray_DIM(partials, 0)
    cdef double* pp = <double*>cnp.PyArray_DATA(partials)
    cdef void* px = cnp.PyArray_DATA(x)
    if cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT32:
        with nogil:
            if nthreads <= 1:
                for c in range(nc):
                    pp[c] = _reduce_block[float](<float*>px, c * REDUCE_CHUNK,
                                                 n if n < (c + 1) * REDUCE_CHUNK else (c + 1) * REDUCE_CHUNK, kind, p)
            else:
                for c in prange(nc, num_threads=nthreads, schedule="dynamic"):
                    pp[c] = _reduce_block[float](<float*>px, c * REDUCE_CHUNK,
                                                 n if n < (c + 1) * REDUCE_CHUNK else (c + 1) * REDUCE_CHUNK, kind, p)
    else:
        with nogil:
            if nthreads <= 1:
                for c in range(nc):
                    pp[c] = _reduce_block[double](<double*>px, c * REDUCE_CHUNK,
                                                  n if n < (c + 1) * REDUCE_CHUNK else (c + 1) * REDUCE_CHUNK, kind, p)
            else:
                for c in prange(nc, num_threads=nthreads, schedule="dynamic"):
                    pp[c] = _reduce_block[double](<double*>px, c * REDUCE_CHUNK,
                                                  n if n < (c + 1) * REDUCE_CHUNK else (c + 1) * REDUCE_CHUNK, kind, p)
