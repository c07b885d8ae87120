/* LRN's output step, y = x * d^-beta for beta 0.75 (mode 1), 0.5 (mode 2) and 1 (mode 3), with
 * the square roots as SIMD instructions.
 *
 * gcc keeps errno semantics for sqrt unless built with -fno-math-errno (which setup.py's
 * trailing -fno-fast-math undoes), and then will not vectorize it; the intrinsics below are the
 * same IEEE operations (sqrt and division are correctly rounded), so the results are those of
 * the scalar tail loop and of the numba kernel, bit for bit:
 *   mode 1: s = sqrt(d), y = x * (1 / (s * sqrt(s)));  mode 2: y = x * (1 / sqrt(d));
 *   mode 3: y = x * (1 / d)
 */
#include <math.h>
#include <stddef.h>
#if defined(__AVX__)
#include <immintrin.h>
#endif

static inline void lrn_apply_f32(const float *x, float *y, const float *d, ptrdiff_t n, int mode) {
    ptrdiff_t t = 0;
#if defined(__AVX__)
    const __m256 one = _mm256_set1_ps(1.0f);
    for (; t + 8 <= n; t += 8) {
        __m256 dv = _mm256_loadu_ps(d + t), f;
        if (mode == 1) {
            __m256 s = _mm256_sqrt_ps(dv);
            f = _mm256_div_ps(one, _mm256_mul_ps(s, _mm256_sqrt_ps(s)));
        } else if (mode == 2) {
            f = _mm256_div_ps(one, _mm256_sqrt_ps(dv));
        } else {
            f = _mm256_div_ps(one, dv);
        }
        _mm256_storeu_ps(y + t, _mm256_mul_ps(_mm256_loadu_ps(x + t), f));
    }
#endif
    for (; t < n; t++) {
        float s, f;
        if (mode == 1) {
            s = sqrtf(d[t]);
            f = 1.0f / (s * sqrtf(s));
        } else if (mode == 2) {
            f = 1.0f / sqrtf(d[t]);
        } else {
            f = 1.0f / d[t];
        }
        y[t] = x[t] * f;
    }
}

static inline void lrn_apply_f64(const double *x, double *y, const double *d, ptrdiff_t n, int mode) {
    ptrdiff_t t = 0;
#if defined(__AVX__)
    const __m256d one = _mm256_set1_pd(1.0);
    for (; t + 4 <= n; t += 4) {
        __m256d dv = _mm256_loadu_pd(d + t), f;
        if (mode == 1) {
            __m256d s = _mm256_sqrt_pd(dv);
            f = _mm256_div_pd(one, _mm256_mul_pd(s, _mm256_sqrt_pd(s)));
        } else if (mode == 2) {
            f = _mm256_div_pd(one, _mm256_sqrt_pd(dv));
        } else {
            f = _mm256_div_pd(one, dv);
        }
        _mm256_storeu_pd(y + t, _mm256_mul_pd(_mm256_loadu_pd(x + t), f));
    }
#endif
    for (; t < n; t++) {
        double s, f;
        if (mode == 1) {
            s = sqrt(d[t]);
            f = 1.0 / (s * sqrt(s));
        } else if (mode == 2) {
            f = 1.0 / sqrt(d[t]);
        } else {
            f = 1.0 / d[t];
        }
        y[t] = x[t] * f;
    }
}

/* LRN backward's per-channel step, in float64, on t < n (kernels/numba/local.py, the loop
 * after the first window sum): d = k + a * S, p = d^-beta (mode 1: s = sqrt(d),
 * 1 / (s * sqrt(s)); mode 2: 1 / sqrt(d); mode 3: 1 / d; mode 0: pow(d, -beta)), g = dy,
 * Q = (g * (x * p)) / d, S = g * p. The same IEEE operations in the SIMD and scalar loops. */
static inline double lrn_invpow64(double d, double beta, int mode) {
    double s;
    if (mode == 1) {
        s = sqrt(d);
        return 1.0 / (s * sqrt(s));
    }
    if (mode == 2) return 1.0 / sqrt(d);
    if (mode == 3) return 1.0 / d;
    return pow(d, -beta);
}

#if defined(__AVX__)
static inline __m256d lrn_load4_f32(const float *p) { return _mm256_cvtps_pd(_mm_loadu_ps(p)); }
static inline __m256d lrn_load4_f64(const double *p) { return _mm256_loadu_pd(p); }
#endif

#if defined(__AVX__)
#define LRN_GRAD_SIMD(SUF)                                                                     \
    if (mode != 0) {                                                                           \
        const __m256d one = _mm256_set1_pd(1.0), kv = _mm256_set1_pd(k), av = _mm256_set1_pd(a); \
        for (; t + 4 <= n; t += 4) {                                                           \
            __m256d d = _mm256_add_pd(kv, _mm256_mul_pd(av, _mm256_loadu_pd(S + t))), p;       \
            if (mode == 1) {                                                                   \
                __m256d s = _mm256_sqrt_pd(d);                                                 \
                p = _mm256_div_pd(one, _mm256_mul_pd(s, _mm256_sqrt_pd(s)));                   \
            } else if (mode == 2) {                                                            \
                p = _mm256_div_pd(one, _mm256_sqrt_pd(d));                                     \
            } else {                                                                           \
                p = _mm256_div_pd(one, d);                                                     \
            }                                                                                  \
            __m256d g = lrn_load4_##SUF(dy + t);                                               \
            _mm256_storeu_pd(Q + t, _mm256_div_pd(                                             \
                _mm256_mul_pd(g, _mm256_mul_pd(lrn_load4_##SUF(x + t), p)), d));               \
            _mm256_storeu_pd(S + t, _mm256_mul_pd(g, p));                                      \
        }                                                                                      \
    }
#else
#define LRN_GRAD_SIMD(SUF)
#endif

#define LRN_GRAD_DEFINE(T, SUF)                                                                \
static inline void lrn_grad_##SUF(double *S, double *Q, const T *x, const T *dy, ptrdiff_t n, \
                                  double k, double a, double beta, int mode) {                 \
    ptrdiff_t t = 0;                                                                           \
    LRN_GRAD_SIMD(SUF)                                                                         \
    for (; t < n; t++) {                                                                       \
        double d = k + a * S[t];                                                               \
        double p = lrn_invpow64(d, beta, mode);                                                \
        double g = (double)dy[t];                                                              \
        Q[t] = (g * ((double)x[t] * p)) / d;                                                   \
        S[t] = g * p;                                                                          \
    }                                                                                          \
}

LRN_GRAD_DEFINE(float, f32)
LRN_GRAD_DEFINE(double, f64)
