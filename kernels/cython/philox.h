/* Philox4x32-10 tiles for the Cython kernels: the stream of kernels/numba/dropout.py, bit for bit.
 *
 * philox_tile(t, stream, k0, k1, r): r[w][j] = word w of Philox4x32-10 of counter
 * (b mod 2^32, b >> 32, stream, 0), b = 64 t + j, under key (k0, k1). Element i of a stream is
 * r[(i >> 6) & 3][i & 63] of tile i >> 8. The 64 blocks are computed side by side, round by
 * round, so the compiler vectorizes the rounds (integer arithmetic: exact at any SIMD width).
 */
#include <stdint.h>
#include <stddef.h>

#define PHILOX_TILE 64

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
            uint64_t p0 = (uint64_t)0xD2511F53u * c0[j];
            uint64_t p1 = (uint64_t)0xCD9E8D57u * c2[j];
            uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1[j] ^ ka;
            uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3[j] ^ kb;
            c1[j] = (uint32_t)p1;
            c3[j] = (uint32_t)p0;
            c0[j] = n0;
            c2[j] = n2;
        }
        ka += 0x9E3779B9u;
        kb += 0xBB67AE85u;
    }
    for (int j = 0; j < PHILOX_TILE; j++) {
        r[0][j] = c0[j];
        r[1][j] = c1[j];
        r[2][j] = c2[j];
        r[3][j] = c3[j];
    }
}

/* y[k] = x[k] * (bits >= thr ? scale : 0) for the positions [j0, j1) of one tile (rf: its
 * 256 words); T float or double. Written out per type so each loop vectorizes. */
#define PHILOX_DROPOUT(T, SUF)                                                                \
static inline void philox_dropout_##SUF(const T *x, T *y, const uint32_t *rf, ptrdiff_t j0,  \
                                        ptrdiff_t j1, uint32_t thr, T scale) {              \
    for (ptrdiff_t j = j0; j < j1; j++) y[j] = x[j] * (rf[j] >= thr ? scale : (T)0);         \
}
PHILOX_DROPOUT(float, f32)
PHILOX_DROPOUT(double, f64)
