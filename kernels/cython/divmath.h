/* exp, log and the divergence summands, operation for operation those of
 * kernels/numba/divergence.py (fdlibm's algorithms; see the determinism contract there), and
 * the Box-Muller normal of two Philox words, those of kernels/numba/dropout.py.
 * Bit casts through memcpy; built with -ffp-contract=off, so no fused multiply-adds; the
 * selects are written as ternaries after both values are computed, so loops vectorize.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* No FP traps assumed (numba's LLVM assumes none either): GCC may then compute both sides of
 * a select, so the exp/log loops vectorize. Values are unchanged: no reassociation, no FMA. */
#pragma GCC push_options
#pragma GCC optimize ("no-trapping-math")

#define DM_LN2HI 6.93147180369123816490e-01
#define DM_LN2LO 1.90821492927058770002e-10
#define DM_INVLN2 1.44269504088896338700e+00
#define DM_SHIFT 6755399441055744.0
#define DM_P1 1.66666666666666019037e-01
#define DM_P2 -2.77777777770155933842e-03
#define DM_P3 6.61375632143793436117e-05
#define DM_P4 -1.65339022054652515390e-06
#define DM_P5 4.13813679705723846039e-08
#define DM_EXP_LO -707.0
#define DM_EXP_HI 709.0
#define DM_LG1 6.666666666666735130e-01
#define DM_LG2 3.999999999940941908e-01
#define DM_LG3 2.857142874366239149e-01
#define DM_LG4 2.222219843214978396e-01
#define DM_LG5 1.818357216161805012e-01
#define DM_LG6 1.531383769920937332e-01
#define DM_LG7 1.479819860511658591e-01
#define DM_SQRT2 1.4142135623730951
#define DM_TINY 2.2250738585072014e-308
#define DM_TWO54 18014398509481984.0

static inline int64_t dm_bits(double x) {
    int64_t i;
    memcpy(&i, &x, sizeof i);
    return i;
}

static inline double dm_from_bits(int64_t i) {
    double x;
    memcpy(&x, &i, sizeof x);
    return x;
}

static inline double dm_exp(double x) {
    double xc = x < DM_EXP_LO ? DM_EXP_LO : x;
    xc = xc > DM_EXP_HI ? DM_EXP_HI : xc;
    double t = xc * DM_INVLN2 + DM_SHIFT;
    double kf = t - DM_SHIFT;
    double hi = xc - kf * DM_LN2HI;
    double lo = kf * DM_LN2LO;
    double r = hi - lo;
    double rr = r * r;
    double c = r - rr * (DM_P1 + rr * (DM_P2 + rr * (DM_P3 + rr * (DM_P4 + rr * DM_P5))));
    double y = 1.0 - ((lo - (r * c) / (2.0 - c)) - hi);
    double scale = dm_from_bits((int64_t)((uint64_t)(dm_bits(t) + 1022) << 52));
    double res = (y + y) * scale;
    res = x < DM_EXP_LO ? 0.0 : res;
    res = x > DM_EXP_HI ? INFINITY : res;
    return res;
}

/* fexp32 of kernels/numba/divergence.py: float32 arithmetic, for float32 logits */
#define DM_L2E32 ((float)1.4426950408889634)
#define DM_SH32 12582912.0f
#define DM_LN2H32 ((float)0.693145751953125)
#define DM_LN2L32 ((float)1.428606765330187045e-06)
#define DM_LO32 -86.0f

static inline float dm_exp32(float d) {
    float dc = d < DM_LO32 ? DM_LO32 : d;
    float t = dc * DM_L2E32 + DM_SH32;
    float kf = t - DM_SH32;
    float r = (dc - kf * DM_LN2H32) - kf * DM_LN2L32;
    float p = 1.0f + r * (1.0f + r * ((float)(1.0 / 2) + r * ((float)(1.0 / 6) + r * ((float)(1.0 / 24)
              + r * ((float)(1.0 / 120) + r * ((float)(1.0 / 720) + r * (float)(1.0 / 5040)))))));
    int32_t i;
    memcpy(&i, &t, sizeof i);
    i = (int32_t)((uint32_t)(i + 126) << 23);
    float s;
    memcpy(&s, &i, sizeof s);
    float res = (p + p) * s;
    return d < DM_LO32 ? 0.0f : res;
}

#define DM_EXPX_f32(v, mx) ((double)dm_exp32((v) - (float)(mx)))
#define DM_EXPX_f64(v, mx) dm_exp((double)(v) - (mx))

static inline double dm_log(double x) {
    int sub = x < DM_TINY;
    double xsc = x * DM_TWO54;  /* both sides computed: the selects need no branch */
    double xs = sub ? xsc : x;
    int64_t ix = dm_bits(xs);
    int64_t k = (ix >> 52) - (sub ? 1077 : 1023);
    double m = dm_from_bits((ix & INT64_C(0x000FFFFFFFFFFFFF)) | INT64_C(0x3FF0000000000000));
    int big = m > DM_SQRT2;
    double mh = m * 0.5;
    m = big ? mh : m;
    k = big ? k + 1 : k;
    double f = m - 1.0;
    double hfsq = 0.5 * f * f;
    double s = f / (2.0 + f);
    double z = s * s;
    double w = z * z;
    double t1 = w * (DM_LG2 + w * (DM_LG4 + w * DM_LG6));
    double t2 = z * (DM_LG1 + w * (DM_LG3 + w * (DM_LG5 + w * DM_LG7)));
    double rr = t2 + t1;
    double dk = (double)k;
    double res = dk * DM_LN2HI - ((hfsq - (s * (hfsq + rr) + dk * DM_LN2LO)) - f);
    res = x == 0.0 ? -INFINITY : res;
    res = x < 0.0 ? NAN : res;
    res = !(x < INFINITY) ? x : res;
    return res;
}

/* cos(2 pi k / 2^32) within about 1 ulp, without a libm call (so the loop vectorizes and the
 * numba twin gives the same bits): k = q 2^30 + r with r in [-2^29, 2^29), so the angle is
 * q pi/2 + x with |x| <= pi/4, x = r (2 pi 2^-32) (r exact; one rounding); then fdlibm's
 * __kernel_cos and __kernel_sin of x, both computed, the quadrant selecting. */
#define DM_C1 4.16666666666666019037e-02
#define DM_C2 -1.38888888888741095749e-03
#define DM_C3 2.48015872894767294178e-05
#define DM_C4 -2.75573143513906633035e-07
#define DM_C5 2.08757232129817482790e-09
#define DM_C6 -1.13596475577881948265e-11
#define DM_S1 -1.66666666666666324348e-01
#define DM_S2 8.33333333332248946124e-03
#define DM_S3 -1.98412698298579493134e-04
#define DM_S4 2.75573137070700676789e-06
#define DM_S5 -2.50507602534068634195e-08
#define DM_S6 1.58969099521155010221e-10
#define DM_2PI_2M32 (6.283185307179586 / 4294967296.0) /* exact: a power-of-two scaling */
#define DM_2M32 (1.0 / 4294967296.0)

static inline double dm_cos2pi(uint32_t k) {
    int64_t kk = (int64_t)k;
    int64_t q = (kk + (INT64_C(1) << 29)) >> 30;
    double x = (double)(kk - (q << 30)) * DM_2PI_2M32;
    double z = x * x;
    double hz = 0.5 * z;
    double w = 1.0 - hz;
    double rc = z * (DM_C1 + z * (DM_C2 + z * (DM_C3 + z * (DM_C4 + z * (DM_C5 + z * DM_C6)))));
    double c = w + (((1.0 - w) - hz) + z * rc);
    double rs = DM_S2 + z * (DM_S3 + z * (DM_S4 + z * (DM_S5 + z * DM_S6)));
    double s = x + (z * x) * (DM_S1 + z * rs);
    int64_t j = q & 3;
    double odd = j == 1 ? -s : s;   /* j = 1: -sin, j = 3: sin */
    double even = j == 0 ? c : -c;  /* j = 0: cos, j = 2: -cos */
    return (j & 1) ? odd : even;
}

/* the standard normal of Philox words w1, w2 (Box-Muller, cosine branch):
 * sqrt(-2 log u1) cos(2 pi u2), u1 = (w1 + 0.5) 2^-32 in (0, 1), u2 = w2 2^-32 */
static inline double dm_normal(uint32_t w1, uint32_t w2) {
    return sqrt(-2.0 * dm_log(((double)w1 + 0.5) * DM_2M32)) * dm_cos2pi(w2);
}

/* z[j] = dm_normal(w[2j], w[2j + 1]) for j in [j0, j1): the loop lives here, under this
 * file's optimize pragma (GCC does not inline dm_normal into code compiled without it), and
 * vectorizes */
static inline void dm_normals(const uint32_t *w, ptrdiff_t j0, ptrdiff_t j1, double *z) {
    for (ptrdiff_t j = j0; j < j1; j++) z[j] = dm_normal(w[2 * j], w[2 * j + 1]);
}

static inline double dm_entr(double x) {
    double v = -(x * dm_log(x));
    v = x == 0.0 ? 0.0 : v;
    v = x < 0.0 ? -INFINITY : v;
    return v;
}

static inline double dm_rel_entr(double x, double y) {
    double v = x * dm_log(x / y);
    v = ((x == 0.0) & (y >= 0.0)) ? 0.0 : v;
    v = ((x < 0.0) | (y < 0.0)) ? INFINITY : v;
    v = ((x == x) & (y == y)) ? v : NAN;
    return v;
}

static inline double dm_rel_entr_exact(double x, double y) {
    double r = x / y;
    double v1 = x * dm_log(r), v2 = x * (dm_log(x) - dm_log(y));
    double v = r < INFINITY ? v1 : v2;
    v = ((x == 0.0) & (y >= 0.0)) ? 0.0 : v;
    v = ((x < 0.0) | (y < 0.0)) ? INFINITY : v;
    v = ((x == x) & (y == y)) ? v : NAN;
    return v;
}

static inline double dm_cross(double x, double y) {
    double v = -(x * dm_log(y));
    v = ((x == 0.0) & (y >= 0.0)) ? 0.0 : v;
    v = ((x < 0.0) | (y < 0.0)) ? NAN : v;
    return v;
}

static inline double dm_term(int mode, double x, double y) {
    if (mode == 0) return dm_entr(x);
    if (mode == 1) return dm_rel_entr(x, y);
    if (mode == 2) return dm_cross(x, y);
    if (mode == 4) return dm_rel_entr_exact(x, y);
    double mm = (x + y) * 0.5;
    return dm_rel_entr(x, mm) + dm_rel_entr(y, mm);
}

static inline double dm_combine(const double *acc) {
    double v[8];
    for (int j = 0; j < 8; j++) v[j] = (acc[j] + acc[8 + j]) + (acc[16 + j] + acc[24 + j]);
    return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
}

static inline double dm_lane_sum_f64(const double *x, ptrdiff_t n);

/* DM_DEFINE(T, SUF): the row loops for element type T (see kernels/numba/divergence.py):
 * elementwise loops (they vectorize) into a float64 row buffer, then sums in 32 lanes. */
#define DM_DEFINE(T, SUF)                                                                     \
static inline double dm_lane_sum_##SUF(const T *x, ptrdiff_t n) {                             \
    double acc[32] = {0};                                                                     \
    ptrdiff_t i, j, n32 = n - n % 32;                                                         \
    for (i = 0; i < n32; i += 32) {                                                           \
        for (j = 0; j < 32; j++) acc[j] += (double)x[i + j];                                  \
    }                                                                                         \
    double s = dm_combine(acc);                                                               \
    for (i = n32; i < n; i++) s += (double)x[i];                                              \
    return s;                                                                                 \
}                                                                                             \
static void dm_terms_##SUF(int mode, const T *p, const T *q, double rp, double rq,           \
                           double *buf, ptrdiff_t n) {                                        \
    ptrdiff_t i;                                                                              \
    if (mode == 0) {                                                                          \
        _Pragma("omp simd")                                                                   \
        for (i = 0; i < n; i++) buf[i] = dm_entr((double)p[i] * rp);                          \
    } else if (mode == 1) {                                                                   \
        _Pragma("omp simd")                                                                   \
        for (i = 0; i < n; i++) buf[i] = dm_rel_entr((double)p[i] * rp, (double)q[i] * rq);   \
    } else if (mode == 2) {                                                                   \
        _Pragma("omp simd")                                                                   \
        for (i = 0; i < n; i++) buf[i] = dm_cross((double)p[i] * rp, (double)q[i] * rq);      \
    } else if (mode == 3) {                                                                   \
        _Pragma("omp simd")                                                                   \
        for (i = 0; i < n; i++) buf[i] = dm_term(3, (double)p[i] * rp, (double)q[i] * rq);    \
    } else {                                                                                  \
        for (i = 0; i < n; i++) buf[i] = dm_rel_entr_exact((double)p[i] * rp, (double)q[i] * rq); \
    }                                                                                         \
}                                                                                             \
static inline double dm_div_row_##SUF(int mode, const T *p, const T *q, ptrdiff_t n,          \
                                      double *buf) {                                          \
    double rp = 1.0 / dm_lane_sum_##SUF(p, n);                                                \
    double rq = mode == 0 ? rp : 1.0 / dm_lane_sum_##SUF(q, n);                               \
    dm_terms_##SUF(mode, p, q, rp, rq, buf, n);                                               \
    double s = dm_lane_sum_f64(buf, n);                                                       \
    if (mode == 1 && s == INFINITY) {                                                         \
        /* inf: q = 0 < p, or p/q overflowed (q subnormal): the exact pass tells them apart */\
        dm_terms_##SUF(4, p, q, rp, rq, buf, n);                                              \
        s = dm_lane_sum_f64(buf, n);                                                          \
    }                                                                                         \
    return s;                                                                                 \
}                                                                                             \
static inline double dm_row_max_##SUF(const T *x, ptrdiff_t n) {                              \
    double acc[32], mx = -INFINITY;                                                           \
    ptrdiff_t i, j, n32 = n - n % 32;                                                         \
    for (j = 0; j < 32; j++) acc[j] = -INFINITY;                                              \
    for (i = 0; i < n32; i += 32) {                                                           \
        for (j = 0; j < 32; j++) {                                                            \
            double v = (double)x[i + j];                                                      \
            acc[j] = v > acc[j] ? v : acc[j];                                                 \
        }                                                                                     \
    }                                                                                         \
    for (j = 0; j < 32; j++) mx = acc[j] > mx ? acc[j] : mx;                                  \
    for (i = n32; i < n; i++) {                                                               \
        double v = (double)x[i];                                                              \
        mx = v > mx ? v : mx;                                                                 \
    }                                                                                         \
    return mx;                                                                                \
}                                                                                             \
/* sum exp(x - mx) in lanes; e[i] = exp(x[i] - mx) */                                         \
static inline double dm_exp_sum_##SUF(const T *x, ptrdiff_t n, double mx, double *e) {        \
    ptrdiff_t i;                                                                              \
    _Pragma("omp simd")                                                                       \
    for (i = 0; i < n; i++) e[i] = DM_EXPX_##SUF(x[i], mx);                                 \
    return dm_lane_sum_f64(e, n);                                                             \
}                                                                                             \
static inline void dm_softmax_row_##SUF(const T *x, T *y, ptrdiff_t n, int log, double *e) { \
    double mx = dm_row_max_##SUF(x, n);                                                       \
    double s = dm_exp_sum_##SUF(x, n, mx, e);                                                 \
    ptrdiff_t i;                                                                              \
    if (log) {                                                                                \
        double ls = dm_log(s);                                                                \
        for (i = 0; i < n; i++) y[i] = (T)(((double)x[i] - mx) - ls);                         \
    } else {                                                                                  \
        double rs = 1.0 / s;                                                                  \
        for (i = 0; i < n; i++) y[i] = (T)(e[i] * rs);                                        \
    }                                                                                         \
}                                                                                             \
static inline double dm_sce_row_##SUF(const T *x, ptrdiff_t n, int64_t label, const double *w,\
                                      double wsum, int64_t ignore_index, double eps, double g,\
                                      T *dx, double *e, double *sbuf) {                       \
    ptrdiff_t i;                                                                              \
    if (label == ignore_index) {                                                              \
        if (dx) for (i = 0; i < n; i++) dx[i] = 0;                                            \
        return 0.0;                                                                           \
    }                                                                                         \
    double mx = dm_row_max_##SUF(x, n);                                                       \
    double s = dm_exp_sum_##SUF(x, n, mx, e);                                                 \
    double ls = dm_log(s);                                                                    \
    double wy = w ? w[label] : 1.0;                                                           \
    double loss = (1.0 - eps) * (wy * (ls - ((double)x[label] - mx)));                        \
    double eb = eps / n;                                                                      \
    if (eps > 0.0) {                                                                          \
        for (i = 0; i < n; i++) sbuf[i] = (ls - ((double)x[i] - mx)) * (w ? w[i] : 1.0);     \
        loss += eb * dm_lane_sum_f64(sbuf, n);                                                \
    }                                                                                         \
    if (dx) {                                                                                 \
        double a = (1.0 - eps) * wy + eb * wsum;                                              \
        double rs = 1.0 / s;                                                                  \
        if (w) {                                                                              \
            for (i = 0; i < n; i++) dx[i] = (T)((a * (e[i] * rs) - eb * w[i]) * g);           \
        } else {                                                                              \
            for (i = 0; i < n; i++) dx[i] = (T)((a * (e[i] * rs) - eb * 1.0) * g);            \
        }                                                                                     \
        dx[label] = (T)((a * (e[label] * rs) - (eb * wy + (1.0 - eps) * wy)) * g);            \
    }                                                                                         \
    return loss;                                                                              \
}

DM_DEFINE(double, f64)
DM_DEFINE(float, f32)

#pragma GCC pop_options
