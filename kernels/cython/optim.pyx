# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Optimizer update loops (SGD, Adagrad, Adadelta, RMSprop, Adam/AdamW), Cython + OpenMP.

The multi-tensor layout (pointer table, chunk table, coefficient rows) and the arithmetic,
op by op, are those of kernels/numba/optim.py, so both backends agree bit for bit: each
tensor op in the dtype, explicit fused multiply-adds (C's fma/fmaf) exactly where the numba
kernels call llvm.fma, no other contraction (-ffp-contract=off).
"""
from cython.parallel cimport prange
from libc.math cimport sqrt, sqrtf, fma, fmaf, fabs
from libc.stdint cimport int64_t
cimport numpy as cnp

cnp.import_array()

ctypedef fused floating:
    float
    double


cdef inline floating _fma(floating a, floating b, floating c) noexcept nogil:
    if floating is float:
        return fmaf(a, b, c)
    else:
        return fma(a, b, c)


cdef inline floating _sqrt(floating a) noexcept nogil:
    if floating is float:
        return sqrtf(a)
    else:
        return sqrt(a)


cdef inline floating _lerp(floating a, floating b, floating w, floating one_minus_w,
                           bint small) noexcept nogil:
    cdef floating d = b - a
    return _fma(w, d, a) if small else _fma(-d, one_minus_w, b)


cdef inline floating _nan_max(floating a, floating b) noexcept nogil:
    return b if (b >= a or b != b) else a


cdef inline floating* _slot(const int64_t* ptrs, Py_ssize_t nslots, const int64_t* chunk,
                            Py_ssize_t slot, floating proto) noexcept nogil:
    cdef int64_t address = ptrs[chunk[0] * nslots + slot]
    if address == 0:
        return NULL
    return (<floating*>address) + chunk[1]


# ---------------------------------------------------------------- SGD

cdef void _sgd_chunk(const int64_t* ptrs, Py_ssize_t ns, const int64_t* chunk,
                     const double* c, floating proto) noexcept nogil:
    cdef floating* p = _slot(ptrs, ns, chunk, 0, proto)
    cdef floating* g = _slot(ptrs, ns, chunk, 1, proto)
    cdef floating* buf = _slot(ptrs, ns, chunk, 2, proto)
    cdef Py_ssize_t i, n = chunk[2] - chunk[1]
    cdef floating neg_lr = <floating>(-c[0]), mom = <floating>c[1]
    cdef floating one_m_damp = <floating>(1.0 - c[2]), wd = <floating>c[3], d, b
    cdef bint has_mom = c[1] != 0.0, has_wd = c[3] != 0.0
    cdef bint nesterov = c[4] != 0.0, maximize = c[5] != 0.0, first = c[6] != 0.0
    for i in range(n):
        d = -g[i] if maximize else g[i]
        if has_wd:
            d = _fma(wd, p[i], d)
        if has_mom:
            b = d if first else _fma(one_m_damp, d, buf[i] * mom)
            buf[i] = b
            d = _fma(mom, b, d) if nesterov else b
        p[i] = _fma(neg_lr, d, p[i])


# ---------------------------------------------------------------- Adagrad

cdef void _adagrad_chunk(const int64_t* ptrs, Py_ssize_t ns, const int64_t* chunk,
                         const double* c, floating proto) noexcept nogil:
    cdef floating* p = _slot(ptrs, ns, chunk, 0, proto)
    cdef floating* g = _slot(ptrs, ns, chunk, 1, proto)
    cdef floating* s = _slot(ptrs, ns, chunk, 2, proto)
    cdef Py_ssize_t i, n = chunk[2] - chunk[1]
    cdef floating neg_clr = <floating>(-c[0]), wd = <floating>c[1], eps = <floating>c[2], d, acc
    cdef bint has_wd = c[1] != 0.0, maximize = c[3] != 0.0
    for i in range(n):
        d = -g[i] if maximize else g[i]
        if has_wd:
            d = _fma(wd, p[i], d)
        acc = _fma(d, d, s[i])
        s[i] = acc
        p[i] = p[i] + (neg_clr * d) / (_sqrt(acc) + eps)


# ---------------------------------------------------------------- Adadelta

cdef void _adadelta_chunk(const int64_t* ptrs, Py_ssize_t ns, const int64_t* chunk,
                          const double* c, floating proto) noexcept nogil:
    cdef floating* p = _slot(ptrs, ns, chunk, 0, proto)
    cdef floating* g = _slot(ptrs, ns, chunk, 1, proto)
    cdef floating* sq = _slot(ptrs, ns, chunk, 2, proto)
    cdef floating* acc = _slot(ptrs, ns, chunk, 3, proto)
    cdef Py_ssize_t i, n = chunk[2] - chunk[1]
    cdef floating neg_lr = <floating>(-c[0]), rho = <floating>c[1]
    cdef floating one_m_rho = <floating>(1.0 - c[1]), eps = <floating>c[2], wd = <floating>c[3]
    cdef floating d, s, delta
    cdef bint has_wd = c[3] != 0.0, maximize = c[4] != 0.0
    for i in range(n):
        d = -g[i] if maximize else g[i]
        if has_wd:
            d = _fma(wd, p[i], d)
        s = _fma(one_m_rho * d, d, sq[i] * rho)
        sq[i] = s
        delta = (_sqrt(acc[i] + eps) / _sqrt(s + eps)) * d
        acc[i] = _fma(one_m_rho * delta, delta, acc[i] * rho)
        p[i] = _fma(neg_lr, delta, p[i])


# ---------------------------------------------------------------- RMSprop

cdef void _rmsprop_chunk(const int64_t* ptrs, Py_ssize_t ns, const int64_t* chunk,
                         const double* c, floating proto) noexcept nogil:
    cdef floating* p = _slot(ptrs, ns, chunk, 0, proto)
    cdef floating* g = _slot(ptrs, ns, chunk, 1, proto)
    cdef floating* sq = _slot(ptrs, ns, chunk, 2, proto)
    cdef floating* ga = _slot(ptrs, ns, chunk, 3, proto)
    cdef floating* buf = _slot(ptrs, ns, chunk, 4, proto)
    cdef Py_ssize_t i, n = chunk[2] - chunk[1]
    cdef floating neg_lr = <floating>(-c[0]), alpha = <floating>c[1], w = <floating>(1.0 - c[1])
    cdef floating eps = <floating>c[2], wd = <floating>c[3], mom = <floating>c[4]
    cdef floating one_m_w = <floating>1.0 - w, d, s, a, avg, b
    cdef bint small = fabs(w) < 0.5
    cdef bint has_wd = c[3] != 0.0, has_mom = c[4] > 0.0, centered = c[5] != 0.0
    cdef bint maximize = c[6] != 0.0
    cdef floating sign = <floating>(-1.0 if maximize else 1.0)
    if not (has_wd or has_mom or centered):  # torch's default RMSprop, branch-free
        for i in range(n):
            d = g[i] * sign
            s = _fma(w * d, d, sq[i] * alpha)
            sq[i] = s
            p[i] = p[i] + (neg_lr * d) / (_sqrt(s) + eps)
        return
    for i in range(n):
        d = -g[i] if maximize else g[i]
        if has_wd:
            d = _fma(wd, p[i], d)
        s = _fma(w * d, d, sq[i] * alpha)
        sq[i] = s
        if centered:
            a = _lerp(ga[i], d, w, one_m_w, small)
            ga[i] = a
            avg = _sqrt(_fma(-a, a, s)) + eps
        else:
            avg = _sqrt(s) + eps
        if has_mom:
            b = buf[i] * mom + d / avg
            buf[i] = b
            p[i] = _fma(neg_lr, b, p[i])
        else:
            p[i] = p[i] + (neg_lr * d) / avg


# ---------------------------------------------------------------- Adam / AdamW

cdef void _adam_chunk(const int64_t* ptrs, Py_ssize_t ns, const int64_t* chunk,
                      const double* c, floating proto) noexcept nogil:
    cdef floating* p = _slot(ptrs, ns, chunk, 0, proto)
    cdef floating* g = _slot(ptrs, ns, chunk, 1, proto)
    cdef floating* m = _slot(ptrs, ns, chunk, 2, proto)
    cdef floating* v = _slot(ptrs, ns, chunk, 3, proto)
    cdef floating* vmax = _slot(ptrs, ns, chunk, 4, proto)
    cdef Py_ssize_t i, n = chunk[2] - chunk[1]
    cdef floating w1 = <floating>(1.0 - c[1])
    cdef floating one_m_w1 = <floating>1.0 - w1
    cdef bint small = fabs(w1) < 0.5
    cdef floating beta2 = <floating>c[2], w2 = <floating>(1.0 - c[2]), eps = <floating>c[3]
    cdef floating wd = <floating>c[4], decay = <floating>(1.0 - c[0] * c[4])
    cdef floating neg_step_size = <floating>(-c[8]), bc2_sqrt = <floating>c[9]
    cdef floating d, x, a, s
    cdef bint has_wd = c[4] != 0.0, decoupled = c[5] != 0.0, amsgrad = c[6] != 0.0
    cdef bint maximize = c[7] != 0.0
    # branch-free loops for the cases without amsgrad (they vectorize): sign = -1 negates the
    # gradient exactly (maximize); decay is 1 without weight decay
    cdef floating sign = <floating>(-1.0 if maximize else 1.0)
    if not amsgrad and (decoupled or not has_wd):
        for i in range(n):
            d = g[i] * sign
            x = p[i] * decay
            a = _lerp(m[i], d, w1, one_m_w1, small)
            m[i] = a
            s = _fma(w2 * d, d, v[i] * beta2)
            v[i] = s
            p[i] = x + (neg_step_size * a) / (_sqrt(s) / bc2_sqrt + eps)
        return
    if decoupled or not has_wd:  # amsgrad
        for i in range(n):
            d = g[i] * sign
            x = p[i] * decay
            a = _lerp(m[i], d, w1, one_m_w1, small)
            m[i] = a
            s = _fma(w2 * d, d, v[i] * beta2)
            v[i] = s
            s = _nan_max(vmax[i], s)
            vmax[i] = s
            p[i] = x + (neg_step_size * a) / (_sqrt(s) / bc2_sqrt + eps)
        return
    if not amsgrad:  # Adam's L2 penalty
        for i in range(n):
            x = p[i]
            d = _fma(wd, x, g[i] * sign)
            a = _lerp(m[i], d, w1, one_m_w1, small)
            m[i] = a
            s = _fma(w2 * d, d, v[i] * beta2)
            v[i] = s
            p[i] = x + (neg_step_size * a) / (_sqrt(s) / bc2_sqrt + eps)
        return
    for i in range(n):
        d = -g[i] if maximize else g[i]
        x = p[i]
        if has_wd:
            if decoupled:
                x = x * decay
            else:
                d = _fma(wd, x, d)
        a = _lerp(m[i], d, w1, one_m_w1, small)
        m[i] = a
        s = _fma(w2 * d, d, v[i] * beta2)
        v[i] = s
        if amsgrad:
            s = _nan_max(vmax[i], s)
            vmax[i] = s
        p[i] = x + (neg_step_size * a) / (_sqrt(s) / bc2_sqrt + eps)


# ---------------------------------------------------------------- the launches

ctypedef void (*chunk_f32)(const int64_t*, Py_ssize_t, const int64_t*, const double*, float) noexcept nogil
ctypedef void (*chunk_f64)(const int64_t*, Py_ssize_t, const int64_t*, const double*, double) noexcept nogil


# Chunks are handed out "guided" (large contiguous runs first, then smaller ones): a thread
# preempted on a busy machine does not hold the whole step at the region's closing barrier
# (elementwise updates: the result does not depend on which thread runs a chunk).
cdef void _launch32(chunk_f32 f, const int64_t* ptrs, Py_ssize_t ns, const int64_t* chunks,
                    Py_ssize_t nchunks, const double* coef, Py_ssize_t nk, int nthreads) noexcept nogil:
    cdef Py_ssize_t k
    if nthreads <= 1:
        for k in range(nchunks):
            f(ptrs, ns, chunks + 3 * k, coef + chunks[3 * k] * nk, 0.0)
    else:
        for k in prange(nchunks, num_threads=nthreads, schedule="guided"):
            f(ptrs, ns, chunks + 3 * k, coef + chunks[3 * k] * nk, 0.0)


cdef void _launch64(chunk_f64 f, const int64_t* ptrs, Py_ssize_t ns, const int64_t* chunks,
                    Py_ssize_t nchunks, const double* coef, Py_ssize_t nk, int nthreads) noexcept nogil:
    cdef Py_ssize_t k
    if nthreads <= 1:
        for k in range(nchunks):
            f(ptrs, ns, chunks + 3 * k, coef + chunks[3 * k] * nk, 0.0)
    else:
        for k in prange(nchunks, num_threads=nthreads, schedule="guided"):
            f(ptrs, ns, chunks + 3 * k, coef + chunks[3 * k] * nk, 0.0)


cdef _run(chunk_f32 f32, chunk_f64 f64, cnp.ndarray ptrs, cnp.ndarray chunks, cnp.ndarray coef,
          cnp.ndarray proto, int nthreads):
    cdef const int64_t* pp = <int64_t*>cnp.PyArray_DATA(ptrs)
    cdef const int64_t* pc = <int64_t*>cnp.PyArray_DATA(chunks)
    cdef const double* pk = <double*>cnp.PyArray_DATA(coef)
    cdef Py_ssize_t ns = cnp.PyArray_DIM(ptrs, 1), nchunks = cnp.PyArray_DIM(chunks, 0)
    cdef Py_ssize_t nk = cnp.PyArray_DIM(coef, 1)
    if cnp.PyArray_TYPE(proto) == cnp.NPY_FLOAT32:
        with nogil:
            _launch32(f32, pp, ns, pc, nchunks, pk, nk, nthreads)
    else:
        with nogil:
            _launch64(f64, pp, ns, pc, nchunks, pk, nk, nthreads)


def sgd_step(cnp.ndarray ptrs, cnp.ndarray chunks, cnp.ndarray coef, cnp.ndarray proto, int nthreads):
    _run(_sgd_chunk[float], _sgd_chunk[double], ptrs, chunks, coef, proto, nthreads)


def adagrad_step(cnp.ndarray ptrs, cnp.ndarray chunks, cnp.ndarray coef, cnp.ndarray proto, int nthreads):
    _run(_adagrad_chunk[float], _adagrad_chunk[double], ptrs, chunks, coef, proto, nthreads)


def adadelta_step(cnp.ndarray ptrs, cnp.ndarray chunks, cnp.ndarray coef, cnp.ndarray proto, int nthreads):
    _run(_adadelta_chunk[float], _adadelta_chunk[double], ptrs, chunks, coef, proto, nthreads)


def rmsprop_step(cnp.ndarray ptrs, cnp.ndarray chunks, cnp.ndarray coef, cnp.ndarray proto, int nthreads):
    _run(_rmsprop_chunk[float], _rmsprop_chunk[double], ptrs, chunks, coef, proto, nthreads)


def adam_step(cnp.ndarray ptrs, cnp.ndarray chunks, cnp.ndarray coef, cnp.ndarray proto, int nthreads):
    _run(_adam_chunk[float], _adam_chunk[double], ptrs, chunks, coef, proto, nthreads)


def addresses(list arrays, cnp.ndarray out):
    """out[i] = the data address of arrays[i] (0 for None): the pointer table, built without
    a Python attribute lookup per array. The caller passes ndarrays (or None) only."""
    cdef Py_ssize_t i, n = len(arrays)
    cdef int64_t* o = <int64_t*>cnp.PyArray_DATA(out)
    cdef object a
    for i in range(n):
        a = arrays[i]
        o[i] = 0 if a is None else <int64_t>cnp.PyArray_DATA(<cnp.ndarray>a)
