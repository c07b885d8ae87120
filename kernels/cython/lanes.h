/* 32-lane float64 row sums, and the elementwise backward pass, with GCC/Clang vector extensions.
 *
 * The fixed summation order (shared with kernels/numba/norm.py, bit for bit):
 * lane j (0 <= j < 32) accumulates elements 32k + j in order; lanes are combined as
 * v[j] = (l[j] + l[8+j]) + (l[16+j] + l[24+j]) for j < 8, then
 * ((v0+v1)+(v2+v3))+((v4+v5)+(v6+v7)); the tail (n % 32 elements) is added in order.
 * Four independent 8-lane vectors hide the add latency. Vector arithmetic is lane-wise IEEE,
 * so the result does not depend on the SIMD width the compiler picks (the extension is
 * built with -ffp-contract=off: no fused multiply-adds).
 */
#include <stddef.h>
#include <string.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

typedef double f64x8 __attribute__((vector_size(64)));
typedef float f32x8 __attribute__((vector_size(32)));

static inline f64x8 lanes_load_f32(const float *p) {
#if defined(__AVX512F__)
    /* one vcvtps2pd zmm, m256: GCC lowers __builtin_convertvector(f32x8 -> f64x8) to two
     * 4-wide conversions plus shuffles, which made the row sums compute-bound */
    return (f64x8)_mm512_cvtps_pd(_mm256_loadu_ps(p));
#else
    f32x8 v;
    memcpy(&v, p, sizeof v);
    return __builtin_convertvector(v, f64x8);
#endif
}

static inline f64x8 lanes_load_f64(const double *p) {
    f64x8 v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void lanes_store_f32(float *p, f64x8 v) {
#if defined(__AVX512F__)
    f32x8 f = (f32x8)_mm512_cvtpd_ps((__m512d)v);
#else
    f32x8 f = __builtin_convertvector(v, f32x8);
#endif
    memcpy(p, &f, sizeof f);
}

static inline void lanes_store_f64(double *p, f64x8 v) {
    memcpy(p, &v, sizeof v);
}

static inline double lanes_combine(f64x8 a0, f64x8 a1, f64x8 a2, f64x8 a3) {
    f64x8 s = (a0 + a1) + (a2 + a3);
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

/* LANES_DEFINE(T, SUF) defines, for element type T:
 *   lanes_sum_SUF(x, n)                        sum x
 *   lanes_sqdev_SUF(x, n, mean)                sum (x - mean)^2
 *   lanes_shifted_SUF(x, n, c, &s1, &s2)       s1 = sum (x - c), s2 = sum (x - c)^2, one pass
 *   lanes_grad_SUF(dy, w, x, n, mean, rstd, &sg, &sgx)
 *       sg = sum g, sgx = sum g * ((x - mean) * rstd), g = dy * w (w NULL: g = dy)
 *   lanes_grad_pf_SUF(dy, w, x, dx, n, mean, rstd, &sg, &sgx)
 *       the same, and prefetches the n elements at dx (the row's dx) for writing
 *   lanes_dx_SUF(dy, w, x, dx, n, mean, rstd, mg, mgx, pdw, pdb, ndy, nx)
 *       dx = ((g - mg) - xhat * mgx) * rstd, xhat = (x - mean) * rstd, in float64;
 *       pdw += dy * xhat and pdb += dy where not NULL (elementwise: no order to keep);
 *       prefetches the n elements at ndy and nx (the next row's dy and x) where not NULL
 *
 * The prefetches change no result. They keep memory busy through both passes of a row: the
 * second pass reads only L1 (the row was just loaded), so without them the next row's loads
 * and the stores' read-for-ownership of dx all stall the first pass (1 thread, 32768x1024
 * float32: 27 ms -> 19 ms; the same loops on cached rows take 14 ms).
 */
/* prefetches the first nbytes (at most LANES_PREFETCH_MAX: more would not stay in L1) at p
 * for reading, one 64-byte line at a time; no value changes. The LayerNorm/RMSNorm forward
 * prefetches the next row this way between a row's statistics and its output pass, which reads
 * only L1, so memory stays busy through it (1 thread, 32768x1024 float32, interleaved medians:
 * about 25% faster; 2 threads: about 5%); the batch statistics prefetch the next piece. */
#define LANES_PREFETCH_MAX 16384
static inline void lanes_prefetch_bytes(const void *p, ptrdiff_t nbytes) {
    ptrdiff_t k;
    if (nbytes > LANES_PREFETCH_MAX) nbytes = LANES_PREFETCH_MAX;
    for (k = 0; k < nbytes; k += 64) __builtin_prefetch((const char *)p + k, 0, 3);
}

/* one prefetch per 64-byte line of the 32 elements at p + i (16 floats or 8 doubles a line) */
#define LANES_PREFETCH32(p, i, rw)                                                            \
    do {                                                                                      \
        ptrdiff_t k_;                                                                         \
        for (k_ = 0; k_ < 32; k_ += 64 / (ptrdiff_t)sizeof(*(p)))                             \
            __builtin_prefetch((p) + (i) + k_, rw, 3);                                        \
    } while (0)
#define LANES_DEFINE(T, SUF)                                                                  \
static inline double lanes_sum_##SUF(const T *x, ptrdiff_t n) {                               \
    ptrdiff_t i, n32 = n - n % 32;                                                            \
    f64x8 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};                                             \
    for (i = 0; i < n32; i += 32) {                                                           \
        a0 += lanes_load_##SUF(x + i);                                                        \
        a1 += lanes_load_##SUF(x + i + 8);                                                    \
        a2 += lanes_load_##SUF(x + i + 16);                                                   \
        a3 += lanes_load_##SUF(x + i + 24);                                                   \
    }                                                                                         \
    double t = lanes_combine(a0, a1, a2, a3);                                                 \
    for (i = n32; i < n; i++) t += (double)x[i];                                              \
    return t;                                                                                 \
}                                                                                             \
static inline double lanes_sqdev_##SUF(const T *x, ptrdiff_t n, double mean) {                \
    ptrdiff_t i, n32 = n - n % 32;                                                            \
    f64x8 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, d0, d1, d2, d3;                             \
    for (i = 0; i < n32; i += 32) {                                                           \
        d0 = lanes_load_##SUF(x + i) - mean;                                                  \
        d1 = lanes_load_##SUF(x + i + 8) - mean;                                              \
        d2 = lanes_load_##SUF(x + i + 16) - mean;                                             \
        d3 = lanes_load_##SUF(x + i + 24) - mean;                                             \
        a0 += d0 * d0;                                                                        \
        a1 += d1 * d1;                                                                        \
        a2 += d2 * d2;                                                                        \
        a3 += d3 * d3;                                                                        \
    }                                                                                         \
    double t = lanes_combine(a0, a1, a2, a3);                                                 \
    for (i = n32; i < n; i++) {                                                               \
        double d = (double)x[i] - mean;                                                       \
        t += d * d;                                                                           \
    }                                                                                         \
    return t;                                                                                 \
}                                                                                             \
static inline void lanes_shifted_##SUF(const T *x, ptrdiff_t n, double c, double *s1,         \
                                       double *s2) {                                          \
    ptrdiff_t i, j, n32 = n - n % 32;                                                         \
    f64x8 a[4] = {{0}, {0}, {0}, {0}}, q[4] = {{0}, {0}, {0}, {0}};                           \
    for (i = 0; i < n32; i += 32) {                                                           \
        for (j = 0; j < 4; j++) {                                                             \
            f64x8 d = lanes_load_##SUF(x + i + 8 * j) - c;                                    \
            a[j] += d;                                                                        \
            q[j] += d * d;                                                                    \
        }                                                                                     \
    }                                                                                         \
    double ta = lanes_combine(a[0], a[1], a[2], a[3]);                                        \
    double tq = lanes_combine(q[0], q[1], q[2], q[3]);                                        \
    for (i = n32; i < n; i++) {                                                               \
        double d = (double)x[i] - c;                                                          \
        ta += d;                                                                              \
        tq += d * d;                                                                          \
    }                                                                                         \
    *s1 = ta;                                                                                 \
    *s2 = tq;                                                                                 \
}                                                                                             \
static inline f64x8 lanes_g_##SUF(const T *dy, const T *w, ptrdiff_t i) {                     \
    f64x8 g = lanes_load_##SUF(dy + i);                                                       \
    return w ? g * lanes_load_##SUF(w + i) : g;                                               \
}                                                                                             \
static inline void lanes_grad_pf_##SUF(const T *dy, const T *w, const T *x, T *dx,           \
                                       ptrdiff_t n, double mean, double rstd, double *sg,     \
                                       double *sgx) {                                         \
    ptrdiff_t i, j, n32 = n - n % 32;                                                         \
    f64x8 a[4] = {{0}, {0}, {0}, {0}}, c[4] = {{0}, {0}, {0}, {0}};                           \
    for (i = 0; i < n32; i += 32) {                                                           \
        if (dx) LANES_PREFETCH32(dx, i, 1);                                                   \
        for (j = 0; j < 4; j++) {                                                             \
            f64x8 g = lanes_g_##SUF(dy, w, i + 8 * j);                                        \
            a[j] += g;                                                                        \
            c[j] += g * ((lanes_load_##SUF(x + i + 8 * j) - mean) * rstd);                    \
        }                                                                                     \
    }                                                                                         \
    double ta = lanes_combine(a[0], a[1], a[2], a[3]);                                        \
    double tc = lanes_combine(c[0], c[1], c[2], c[3]);                                        \
    for (i = n32; i < n; i++) {                                                               \
        double g = w ? (double)dy[i] * (double)w[i] : (double)dy[i];                          \
        ta = ta + g;                                                                          \
        tc = tc + g * (((double)x[i] - mean) * rstd);                                         \
    }                                                                                         \
    *sg = ta;                                                                                 \
    *sgx = tc;                                                                                \
}                                                                                             \
static inline void lanes_grad_##SUF(const T *dy, const T *w, const T *x, ptrdiff_t n,         \
                                    double mean, double rstd, double *sg, double *sgx) {      \
    lanes_grad_pf_##SUF(dy, w, x, NULL, n, mean, rstd, sg, sgx);                              \
}                                                                                             \
static inline void lanes_dx_##SUF(const T *dy, const T *w, const T *x, T *dx, ptrdiff_t n,    \
                                  double mean, double rstd, double mg, double mgx,            \
                                  double *pdw, double *pdb, const T *ndy, const T *nx) {      \
    ptrdiff_t i, n8 = n - n % 8;                                                              \
    for (i = 0; i < n8; i += 8) {                                                             \
        if (ndy && i % 32 == 0) {                                                             \
            LANES_PREFETCH32(ndy, i, 0);                                                      \
            LANES_PREFETCH32(nx, i, 0);                                                       \
        }                                                                                     \
        f64x8 d = lanes_load_##SUF(dy + i);                                                   \
        f64x8 xhat = (lanes_load_##SUF(x + i) - mean) * rstd;                                 \
        f64x8 g = w ? d * lanes_load_##SUF(w + i) : d;                                        \
        lanes_store_##SUF(dx + i, ((g - mg) - xhat * mgx) * rstd);                            \
        if (pdw) lanes_store_f64(pdw + i, lanes_load_f64(pdw + i) + d * xhat);                \
        if (pdb) lanes_store_f64(pdb + i, lanes_load_f64(pdb + i) + d);                       \
    }                                                                                         \
    for (i = n8; i < n; i++) {                                                                \
        double d = (double)dy[i], xhat = ((double)x[i] - mean) * rstd;                        \
        double g = w ? d * (double)w[i] : d;                                                  \
        dx[i] = (T)(((g - mg) - xhat * mgx) * rstd);                                          \
        if (pdw) pdw[i] += d * xhat;                                                          \
        if (pdb) pdb[i] += d;                                                                 \
    }                                                                                         \
}

LANES_DEFINE(float, f32)
LANES_DEFINE(double, f64)

/* (mean, m2 = n var) of n >= 1 float32 values in one pass: the shifted sums of d = x - x[0]
 * and d^2 (exact in float64), mean = c + s1/n, m2 = s2 - s1 (s1/n) clamped at 0 (NaN kept);
 * kernels/numba/norm.py's shifted_moments, where the accuracy argument is */
static inline void lanes_moments_f32(const float *x, ptrdiff_t n, double *mean, double *m2) {
    double c = (double)x[0], s1, s2, dm, q;
    lanes_shifted_f32(x, n, c, &s1, &s2);
    dm = s1 / n;
    q = s2 - s1 * dm;
    *mean = c + dm;
    *m2 = q < 0.0 ? 0.0 : q;
}

/* Prefetch (for reading) the next ``step`` bytes at offset *at of the run at a, and of b when
 * not NULL, up to ``end`` bytes; advances *at. Spread over a loop, it streams the next block
 * in while the current one is read from cache. */
static inline void lanes_prefetch_run(const void *a, const void *b, ptrdiff_t *at, ptrdiff_t end,
                                      ptrdiff_t step) {
    ptrdiff_t o;
    for (o = 0; o < step && *at < end; o += 64, *at += 64) {
        __builtin_prefetch((const char *)a + *at, 0, 3);
        if (b) __builtin_prefetch((const char *)b + *at, 0, 3);
    }
}

/* Column moments of a block of rows (row-major, ``ncols`` per row): for each column j, in row
 * order, s[j] = (sum of the rows' x[r, j]) / rows, then q[j] = sum of (x[r, j] - s[j])^2.
 * Each column is one lane: 32 columns at a time in four 8-lane accumulators kept in registers
 * (the block is re-read from cache per tile), the last ncols % 32 columns one by one; the
 * bits are those of the scalar column loops (kernels/numba/lanes.py's col_moments32).
 * The next_bytes at ``next`` (the next block) are prefetched along the first tile's two passes,
 * so that memory stays busy while the other tiles read cache (no value changes). */
#define COLS_DEFINE(T, SUF)                                                                   \
static inline void cols_moments_##SUF(const T *x, ptrdiff_t rows, ptrdiff_t ncols, double *s,   \
                                      double *q, const void *next, ptrdiff_t next_bytes) {    \
    ptrdiff_t j = 0, r, step = (next_bytes / (2 * rows) + 63) / 64 * 64, at = 0;              \
    double nr = (double)rows;                                                                 \
    for (; j + 32 <= ncols; j += 32) {                                                        \
        f64x8 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, m0, m1, m2, m3, d0, d1, d2, d3;         \
        for (r = 0; r < rows; r++) {                                                          \
            const T *p = x + r * ncols + j;                                                   \
            a0 += lanes_load_##SUF(p);                                                        \
            a1 += lanes_load_##SUF(p + 8);                                                    \
            a2 += lanes_load_##SUF(p + 16);                                                   \
            a3 += lanes_load_##SUF(p + 24);                                                   \
            lanes_prefetch_run(next, NULL, &at, next_bytes, step);                            \
        }                                                                                     \
        m0 = a0 / nr; m1 = a1 / nr; m2 = a2 / nr; m3 = a3 / nr;                               \
        memcpy(s + j, &m0, 64); memcpy(s + j + 8, &m1, 64);                                   \
        memcpy(s + j + 16, &m2, 64); memcpy(s + j + 24, &m3, 64);                             \
        a0 = a1 = a2 = a3 = (f64x8){0};                                                       \
        for (r = 0; r < rows; r++) {                                                          \
            const T *p = x + r * ncols + j;                                                   \
            d0 = lanes_load_##SUF(p) - m0;                                                    \
            d1 = lanes_load_##SUF(p + 8) - m1;                                                \
            d2 = lanes_load_##SUF(p + 16) - m2;                                               \
            d3 = lanes_load_##SUF(p + 24) - m3;                                               \
            a0 += d0 * d0; a1 += d1 * d1; a2 += d2 * d2; a3 += d3 * d3;                       \
            lanes_prefetch_run(next, NULL, &at, next_bytes, step);                            \
        }                                                                                     \
        memcpy(q + j, &a0, 64); memcpy(q + j + 8, &a1, 64);                                   \
        memcpy(q + j + 16, &a2, 64); memcpy(q + j + 24, &a3, 64);                             \
    }                                                                                         \
    for (; j < ncols; j++) {                                                                  \
        double a = 0.0, m, d;                                                                 \
        for (r = 0; r < rows; r++) a += (double)x[r * ncols + j];                             \
        m = a / nr;                                                                           \
        s[j] = m;                                                                             \
        a = 0.0;                                                                              \
        for (r = 0; r < rows; r++) {                                                          \
            d = (double)x[r * ncols + j] - m;                                                 \
            a += d * d;                                                                       \
        }                                                                                     \
        q[j] = a;                                                                             \
    }                                                                                         \
}

/* Column gradient sums of a block of rows: for each column j, in row order, with g = dy[r, j],
 * s1[j] = sum g and s2[j] = sum g * ((x[r, j] - mu[j]) * rs[j]); 32 columns at a time in
 * registers, the rest one by one (kernels/numba/lanes.py's col_grad32); the next_bytes at ndy
 * and nx (the next block) are prefetched along the first tile (no value changes) */
#define COLS_GRAD_DEFINE(T, SUF)                                                              \
static inline void cols_grad_##SUF(const T *dy, const T *x, ptrdiff_t rows, ptrdiff_t ncols,     \
                                   const double *mu, const double *rs, double *s1, double *s2,   \
                                   const void *ndy, const void *nx, ptrdiff_t next_bytes) {      \
    ptrdiff_t j = 0, r, k, step = (next_bytes / rows + 63) / 64 * 64, at = 0;                 \
    for (; j + 32 <= ncols; j += 32) {                                                        \
        f64x8 a[4] = {{0}}, b[4] = {{0}}, m[4], w[4], g;                                      \
        for (k = 0; k < 4; k++) {                                                             \
            m[k] = lanes_load_f64(mu + j + 8 * k);                                            \
            w[k] = lanes_load_f64(rs + j + 8 * k);                                            \
        }                                                                                     \
        for (r = 0; r < rows; r++) {                                                          \
            for (k = 0; k < 4; k++) {                                                         \
                g = lanes_load_##SUF(dy + r * ncols + j + 8 * k);                             \
                a[k] += g;                                                                    \
                b[k] += g * ((lanes_load_##SUF(x + r * ncols + j + 8 * k) - m[k]) * w[k]);    \
            }                                                                                 \
            lanes_prefetch_run(ndy, nx, &at, next_bytes, step);                               \
        }                                                                                     \
        for (k = 0; k < 4; k++) {                                                             \
            memcpy(s1 + j + 8 * k, &a[k], 64);                                                \
            memcpy(s2 + j + 8 * k, &b[k], 64);                                                \
        }                                                                                     \
    }                                                                                         \
    for (; j < ncols; j++) {                                                                  \
        double a = 0.0, b = 0.0, g;                                                           \
        for (r = 0; r < rows; r++) {                                                          \
            g = (double)dy[r * ncols + j];                                                    \
            a += g;                                                                           \
            b += g * (((double)x[r * ncols + j] - mu[j]) * rs[j]);                            \
        }                                                                                     \
        s1[j] = a;                                                                            \
        s2[j] = b;                                                                            \
    }                                                                                         \
}

COLS_DEFINE(float, f32)
COLS_DEFINE(double, f64)
COLS_GRAD_DEFINE(float, f32)
COLS_GRAD_DEFINE(double, f64)
