/* Philox4x32-10 tiles for the Cython kernels: the stream of kernels/numba/dropout.py, bit for bit.
 *
 * philox_tile(t, stream, k0, k1, r): r[w][j] = word w of Philox4x32-10 of counter
 * (b mod 2^32, b >> 32, stream, 0), b = 64 t + j, under key (k0, k1). Element i of a stream is
 * r[(i >> 6) & 3][i & 63] of tile i >> 8. The 64 blocks are computed side by side, round by
 * round: with AVX-512, 16 blocks per vector and the 32x32 -> 64-bit products of even and odd
 * lanes by vpmuludq; otherwise a plain loop the compiler vectorizes. Integer arithmetic: the
 * same bits either way.
 *
 * philox_dropout_T(x, y, rf, j0, j1, thr, scale, stream_store): y[j] = x[j] * (rf[j] >= thr ?
 * scale : 0) for the positions [j0, j1) of one tile; with stream_store (large arrays, whole
 * tiles) y is written with non-temporal stores, which skip reading y's cache lines first.
 */
#include <stdint.h>
#include <stddef.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#define PHILOX_TILE 64
#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

#if defined(__AVX512F__)
static inline void philox_mulhilo(__m512i a, __m512i m, __m512i *hi, __m512i *lo) {
    __m512i pe = _mm512_mul_epu32(a, m);                        /* even lanes' 64-bit products */
    __m512i po = _mm512_mul_epu32(_mm512_srli_epi64(a, 32), m); /* odd lanes' */
    *hi = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(pe, 32), po);
    *lo = _mm512_mask_blend_epi32(0xAAAA, pe, _mm512_slli_epi64(po, 32));
}

static inline void philox_tile(int64_t t, uint32_t stream, uint32_t k0, uint32_t k1,
                               uint32_t r[4][PHILOX_TILE]) {
    const __m512i m0 = _mm512_set1_epi64(PHILOX_M0), m1 = _mm512_set1_epi64(PHILOX_M1);
    const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    __m512i c0[4], c1[4], c2[4], c3[4];
    uint64_t b0 = (uint64_t)t << 6; /* a multiple of 64: the low word does not carry in a tile */
    for (int v = 0; v < 4; v++) {
        uint64_t b = b0 + 16 * (uint64_t)v;
        c0[v] = _mm512_add_epi32(_mm512_set1_epi32((int)(uint32_t)b), iota);
        c1[v] = _mm512_set1_epi32((int)(uint32_t)(b >> 32));
        c2[v] = _mm512_set1_epi32((int)stream);
        c3[v] = _mm512_setzero_si512();
    }
    uint32_t ka = k0, kb = k1;
    for (int round = 0; round < 10; round++) {
        const __m512i vka = _mm512_set1_epi32((int)ka), vkb = _mm512_set1_epi32((int)kb);
        for (int v = 0; v < 4; v++) {
            __m512i h0, l0, h1, l1;
            philox_mulhilo(c0[v], m0, &h0, &l0);
            philox_mulhilo(c2[v], m1, &h1, &l1);
            c0[v] = _mm512_xor_si512(_mm512_xor_si512(h1, c1[v]), vka);
            c2[v] = _mm512_xor_si512(_mm512_xor_si512(h0, c3[v]), vkb);
            c1[v] = l1;
            c3[v] = l0;
        }
        ka += PHILOX_W0;
        kb += PHILOX_W1;
    }
    for (int v = 0; v < 4; v++) {
        _mm512_storeu_si512((void *)&r[0][16 * v], c0[v]);
        _mm512_storeu_si512((void *)&r[1][16 * v], c1[v]);
        _mm512_storeu_si512((void *)&r[2][16 * v], c2[v]);
        _mm512_storeu_si512((void *)&r[3][16 * v], c3[v]);
    }
}
#else
static inline void philox_tile(int64_t t, uint32_t stream, uint32_t k0, uint32_t k1,
                               uint32_t r[4][PHILOX_TILE]) {
    uint32_t c0[PHILOX_TILE], c1[PHILOX_TILE], c2[PHILOX_TILE], c3[PHILOX_TILE];
    uint64_t b0 = (uint64_t)t << 6;
    for (int j = 0; j < PHILOX_TILE; j++) {
        uint64_t b = b0 + (uint64_t)j;
        c0[j] = (uint32_t)b;
        c1[j] = (uint32_t)(b >> 32);
        c2[j] = stream;
        c3[j] = 0;
    }
    uint32_t ka = k0, kb = k1;
    for (int round = 0; round < 10; round++) {
        for (int j = 0; j < PHILOX_TILE; j++) {
            uint64_t p0 = (uint64_t)PHILOX_M0 * c0[j];
            uint64_t p1 = (uint64_t)PHILOX_M1 * c2[j];
            uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1[j] ^ ka;
            uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3[j] ^ kb;
            c1[j] = (uint32_t)p1;
            c3[j] = (uint32_t)p0;
            c0[j] = n0;
            c2[j] = n2;
        }
        ka += PHILOX_W0;
        kb += PHILOX_W1;
    }
    for (int j = 0; j < PHILOX_TILE; j++) {
        r[0][j] = c0[j];
        r[1][j] = c1[j];
        r[2][j] = c2[j];
        r[3][j] = c3[j];
    }
}
#endif

static inline void philox_sfence(void) {
#if defined(__AVX512F__)
    _mm_sfence(); /* non-temporal stores are weakly ordered: drain them before the chunk ends */
#endif
}

#if defined(__AVX512F__)
#define PHILOX_STREAM_OUT(T, SUF, VT, LOADU, STREAM, LANES)                                   \
static inline void philox_stream_##SUF(T *dst, const T *src) {                                \
    ptrdiff_t k = 0, head = ((uintptr_t)dst & 63) ? (64 - ((uintptr_t)dst & 63)) / sizeof(T) : 0; \
    for (; k < head; k++) dst[k] = src[k];                                                    \
    for (; k + LANES <= 256; k += LANES) STREAM(dst + k, LOADU(src + k));                    \
    for (; k < 256; k++) dst[k] = src[k];                                                     \
}
PHILOX_STREAM_OUT(float, f32, __m512, _mm512_loadu_ps, _mm512_stream_ps, 16)
PHILOX_STREAM_OUT(double, f64, __m512d, _mm512_loadu_pd, _mm512_stream_pd, 8)
#define PHILOX_CAN_STREAM(y, T) ((((uintptr_t)(y)) % sizeof(T)) == 0)
#else
#define PHILOX_CAN_STREAM(y, T) 0
static inline void philox_stream_f32(float *dst, const float *src) { for (int k = 0; k < 256; k++) dst[k] = src[k]; }
static inline void philox_stream_f64(double *dst, const double *src) { for (int k = 0; k < 256; k++) dst[k] = src[k]; }
#endif

#define PHILOX_DROPOUT(T, SUF)                                                                \
static inline void philox_dropout_##SUF(const T *x, T *y, const uint32_t *rf, ptrdiff_t j0,  \
                                        ptrdiff_t j1, uint32_t thr, T scale, int stream_store) { \
    if (stream_store && j0 == 0 && j1 == 256 && PHILOX_CAN_STREAM(y, T)) {                    \
        T buf[256] __attribute__((aligned(64)));                                              \
        for (ptrdiff_t j = 0; j < 256; j++) buf[j] = x[j] * (rf[j] >= thr ? scale : (T)0);   \
        philox_stream_##SUF(y, buf);                                                          \
        return;                                                                               \
    }                                                                                         \
    for (ptrdiff_t j = j0; j < j1; j++) y[j] = x[j] * (rf[j] >= thr ? scale : (T)0);         \
}
PHILOX_DROPOUT(float, f32)
PHILOX_DROPOUT(double, f64)
