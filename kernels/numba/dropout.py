"""Counter-based random numbers (Philox4x32-10) and the loops built on them, for Numba's CPU target.

Philox4x32-10 (Salmon, Moraes, Dror, Shaw, "Parallel random numbers: as easy as 1, 2, 3",
SC'11; Random123) maps a 128-bit counter (c0, c1, c2, c3) and a 64-bit key (k0, k1) to 128
random bits through 10 rounds of multiply-high/xor; ``philox4x32_10`` is that function, plain
Python on 32-bit values held in uint64 so that the same source compiles for the CPU (here,
``njit``) and for numba.cuda (kernels/cuda/dropout.py).

The stream: element ``i`` of stream ``s`` under key ``seed`` takes its 32 bits from word
``(i >> 6) & 3`` of block ``b = ((i >> 8) << 6) + (i & 63)``, i.e. Philox4x32-10 of counter
(b mod 2^32, b >> 32, s, 0), key (seed mod 2^32, seed >> 32). A tile of 256 consecutive
elements is the 4 words of 64 consecutive blocks, word by word: every loop computes 64 blocks
side by side (SIMD-friendly) and reads their words in order. Every element's bits depend only
on (seed, stream, i): any thread split, any backend (kernels/cython/philox.h does the same in
C), any device, and any slice regenerated alone give the same bits.

Streams: 0 for uniform bits (dropout's keep test, ``uniform``), 1 for normals (Box-Muller:
normal ``i`` uses words 2i and 2i + 1 of stream 1, with divergence.py's ``flog`` and our
``_cos2pi``: no libm, the same bits as kernels/cython/divmath.h).

The element loops take ``offset``, the stream index of their first element; they are pure
functions of that index, so threads split the work in fixed chunks of tiles.
"""
import numpy as np
from numba import njit, prange

from .divergence import flog

_OPTS = dict(cache=True, nogil=True, error_model="numpy", boundscheck=False)

M0 = np.uint64(0xD2511F53)
M1 = np.uint64(0xCD9E8D57)
W0 = np.uint64(0x9E3779B9)
W1 = np.uint64(0xBB67AE85)
LO = np.uint64(0xFFFFFFFF)
S32 = np.uint64(32)
TILE = 64            # blocks per tile (256 elements)
CHUNK_TILES = 64     # tiles per unit of parallel work (16384 elements)
TWO_M32 = 2.0 ** -32
TWO_PI = 6.283185307179586


def philox4x32_10(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10 of counter (c0, c1, c2, c3) under key (k0, k1): four 32-bit words.
    Arguments and results are uint64 holding 32-bit values."""
    for _ in range(10):
        p0 = M0 * c0
        p1 = M1 * c2
        n0 = (p1 >> S32) ^ c1 ^ k0
        n2 = (p0 >> S32) ^ c3 ^ k1
        c1 = p1 & LO
        c3 = p0 & LO
        c0 = n0
        c2 = n2
        k0 = (k0 + W0) & LO
        k1 = (k1 + W1) & LO
    return c0, c1, c2, c3


philox = njit(inline="always", **_OPTS)(philox4x32_10)


@njit(inline="always", **_OPTS)
def _tile(t, stream, k0, k1, r):
    """r[w, j] = word w of block 64 t + j of ``stream`` (r: (4, 64) uint32)."""
    b0 = np.uint64(t) << np.uint64(6)
    s = np.uint64(stream)
    a0 = np.uint64(k0)
    a1 = np.uint64(k1)
    for j in range(TILE):
        b = b0 + np.uint64(j)
        w0, w1, w2, w3 = philox(b & LO, b >> S32, s, np.uint64(0), a0, a1)
        r[0, j] = w0
        r[1, j] = w1
        r[2, j] = w2
        r[3, j] = w3


@njit(inline="always", **_OPTS)
def _span(c, offset, n):
    """(first tile, last tile + 1) of chunk c of the elements [offset, offset + n)."""
    t0 = (offset >> 8) + c * CHUNK_TILES
    t1 = min(t0 + CHUNK_TILES, ((offset + n - 1) >> 8) + 1)
    return t0, t1


@njit(inline="always", **_OPTS)
def _nchunks(offset, n):
    if n == 0:
        return 0
    ntiles = ((offset + n - 1) >> 8) - (offset >> 8) + 1
    return (ntiles + CHUNK_TILES - 1) // CHUNK_TILES


@njit(inline="always", **_OPTS)
def _overlap(t, offset, n):
    """Positions [j0, j1) of tile t inside [offset, offset + n), and the output index of j = 0."""
    base = t << 8
    j0 = max(offset - base, 0)
    j1 = min(offset + n - base, 256)
    return j0, j1, base - offset


# ---------------------------------------------------------------- the chunk bodies

@njit(inline="always", **_OPTS)
def _bits_chunk(c, out, offset, k0, k1, stream):
    n = out.shape[0]
    r = np.empty((4, TILE), np.uint32)
    rf = r.reshape(4 * TILE)
    t0, t1 = _span(c, offset, n)
    for t in range(t0, t1):
        _tile(t, stream, k0, k1, r)
        j0, j1, d = _overlap(t, offset, n)
        os = out[j0 + d:j1 + d]
        rs = rf[j0:j1]
        for m in range(j1 - j0):
            os[m] = rs[m]


@njit(inline="always", **_OPTS)
def _mask_chunk(c, out, offset, k0, k1, thr):
    n = out.shape[0]
    r = np.empty((4, TILE), np.uint32)
    rf = r.reshape(4 * TILE)
    th = np.uint32(thr)
    t0, t1 = _span(c, offset, n)
    for t in range(t0, t1):
        _tile(t, 0, k0, k1, r)
        j0, j1, d = _overlap(t, offset, n)
        os = out[j0 + d:j1 + d]
        rs = rf[j0:j1]
        for m in range(j1 - j0):
            os[m] = rs[m] >= th


@njit(inline="always", **_OPTS)
def _dropout_chunk(c, x, y, offset, k0, k1, thr, scale):
    n = x.shape[0]
    r = np.empty((4, TILE), np.uint32)
    rf = r.reshape(4 * TILE)
    th = np.uint32(thr)
    zero = scale - scale
    t0, t1 = _span(c, offset, n)
    for t in range(t0, t1):
        _tile(t, 0, k0, k1, r)
        j0, j1, d = _overlap(t, offset, n)
        # views from 0: index arithmetic the vectorizer sees as non-negative
        xs = x[j0 + d:j1 + d]
        ys = y[j0 + d:j1 + d]
        rs = rf[j0:j1]
        for m in range(j1 - j0):
            ys[m] = xs[m] * (scale if rs[m] >= th else zero)


@njit(inline="always", **_OPTS)
def _normal(rf, j):
    """The standard normal of tile position j (0 <= j < 128) from words 2j, 2j + 1 (Box-Muller:
    sqrt(-2 log u1) cos(2 pi u2), u1 = (w1 + 0.5) 2^-32, u2 = w2 2^-32), with fdlibm's log and
    ``_cos2pi``: no libm calls, so the loop vectorizes (kernels/cython/divmath.h, same bits)."""
    u1 = (np.float64(rf[2 * j]) + 0.5) * TWO_M32
    return np.sqrt(-2.0 * flog(u1)) * _cos2pi(rf[2 * j + 1])


_C1, _C2, _C3 = 4.16666666666666019037e-02, -1.38888888888741095749e-03, 2.48015872894767294178e-05
_C4, _C5, _C6 = -2.75573143513906633035e-07, 2.08757232129817482790e-09, -1.13596475577881948265e-11
_S1, _S2, _S3 = -1.66666666666666324348e-01, 8.33333333332248946124e-03, -1.98412698298579493134e-04
_S4, _S5, _S6 = 2.75573137070700676789e-06, -2.50507602534068634195e-08, 1.58969099521155010221e-10
_2PI_2M32 = TWO_PI * TWO_M32  # exact: a power-of-two scaling


@njit(inline="always", **_OPTS)
def _cos2pi(k):
    """cos(2 pi k / 2^32) for a uint32 k within about 1 ulp: k = q 2^30 + r, r in
    [-2^29, 2^29), so the angle is q pi/2 + x, |x| <= pi/4; fdlibm's __kernel_cos and
    __kernel_sin of x, both computed, the quadrant selecting (kernels/cython/divmath.h)."""
    kk = np.int64(k)
    q = (kk + (np.int64(1) << 29)) >> 30
    x = np.float64(kk - (q << 30)) * _2PI_2M32
    z = x * x
    hz = 0.5 * z
    w = 1.0 - hz
    rc = z * (_C1 + z * (_C2 + z * (_C3 + z * (_C4 + z * (_C5 + z * _C6)))))
    c = w + (((1.0 - w) - hz) + z * rc)
    rs = _S2 + z * (_S3 + z * (_S4 + z * (_S5 + z * _S6)))
    s = x + (z * x) * (_S1 + z * rs)
    j = q & 3
    odd = -s if j == 1 else s
    even = c if j == 0 else -c
    return odd if (j & 1) else even


@njit(inline="always", **_OPTS)
def _normal_chunk(c, x, y, offset, k0, k1, a, b, mode):
    """Normals i in [offset, offset + n) (each from words 2i, 2i + 1 of stream 1):
    mode 0: y = a + b * z;  mode 1: y = x * (a + b * z)  (float64, rounded once)."""
    n = y.shape[0]
    r = np.empty((4, TILE), np.uint32)
    rf = r.reshape(4 * TILE)
    # in word units: normals [offset, offset + n) are words [2 offset, 2 offset + 2 n)
    t0, t1 = _span(c, 2 * offset, 2 * n)
    for t in range(t0, t1):
        _tile(t, 1, k0, k1, r)
        j0, j1, d = _overlap(t, 2 * offset, 2 * n)
        # the tile's normals h0 <= j < h1 in one vectorized loop with their outputs, over
        # views from 0 (normals to a scratch array, then a second loop, took 1.6x as long)
        h0, h1, e = j0 >> 1, j1 >> 1, d >> 1
        xs = x[h0 + e:h1 + e]
        ys = y[h0 + e:h1 + e]
        if mode == 0:
            for m in range(h1 - h0):
                ys[m] = a + b * _normal(rf, h0 + m)
        else:
            for m in range(h1 - h0):
                ys[m] = xs[m] * (a + b * _normal(rf, h0 + m))


@njit(inline="always", **_OPTS)
def _uniform_chunk(c, y, offset, k0, k1, low, width):
    """y = low + width * u, u = bits * 2^-32 in [0, 1) (float64, rounded once)."""
    n = y.shape[0]
    r = np.empty((4, TILE), np.uint32)
    rf = r.reshape(4 * TILE)
    t0, t1 = _span(c, offset, n)
    for t in range(t0, t1):
        _tile(t, 0, k0, k1, r)
        j0, j1, d = _overlap(t, offset, n)
        ys = y[j0 + d:j1 + d]
        rs = rf[j0:j1]
        for m in range(j1 - j0):
            ys[m] = low + width * (np.float64(rs[m]) * TWO_M32)


# ---------------------------------------------------------------- entry points
# serial/parallel pairs differ in range/prange alone (numba's disk cache keys on the function)

@njit(**_OPTS)
def random_bits_serial(out, offset, k0, k1, stream):
    for c in range(_nchunks(offset, out.shape[0])):
        _bits_chunk(c, out, offset, k0, k1, stream)


@njit(parallel=True, **_OPTS)
def random_bits_parallel(out, offset, k0, k1, stream):
    for c in prange(_nchunks(offset, out.shape[0])):
        _bits_chunk(c, out, offset, k0, k1, stream)


@njit(**_OPTS)
def dropout_mask_serial(out, offset, k0, k1, thr):
    for c in range(_nchunks(offset, out.shape[0])):
        _mask_chunk(c, out, offset, k0, k1, thr)


@njit(parallel=True, **_OPTS)
def dropout_mask_parallel(out, offset, k0, k1, thr):
    for c in prange(_nchunks(offset, out.shape[0])):
        _mask_chunk(c, out, offset, k0, k1, thr)


@njit(**_OPTS)
def dropout_apply_serial(x, y, offset, k0, k1, thr, scale):
    for c in range(_nchunks(offset, x.shape[0])):
        _dropout_chunk(c, x, y, offset, k0, k1, thr, scale)


@njit(parallel=True, **_OPTS)
def dropout_apply_parallel(x, y, offset, k0, k1, thr, scale):
    for c in prange(_nchunks(offset, x.shape[0])):
        _dropout_chunk(c, x, y, offset, k0, k1, thr, scale)


@njit(**_OPTS)
def normal_apply_serial(x, y, offset, k0, k1, a, b, mode):
    for c in range(_nchunks(2 * offset, 2 * y.shape[0])):
        _normal_chunk(c, x, y, offset, k0, k1, a, b, mode)


@njit(parallel=True, **_OPTS)
def normal_apply_parallel(x, y, offset, k0, k1, a, b, mode):
    for c in prange(_nchunks(2 * offset, 2 * y.shape[0])):
        _normal_chunk(c, x, y, offset, k0, k1, a, b, mode)


@njit(**_OPTS)
def uniform_fill_serial(y, offset, k0, k1, low, width):
    for c in range(_nchunks(offset, y.shape[0])):
        _uniform_chunk(c, y, offset, k0, k1, low, width)


@njit(parallel=True, **_OPTS)
def uniform_fill_parallel(y, offset, k0, k1, low, width):
    for c in prange(_nchunks(offset, y.shape[0])):
        _uniform_chunk(c, y, offset, k0, k1, low, width)


# ---------------------------------------------------------------- norms of arrays (regularization)

REDUCE_CHUNK = 1 << 16  # elements per partial sum: fixed, so the order never depends on threads


@njit(inline="always", **_OPTS)
def _reduce_block(x, lo, hi, kind, p):
    """Over x[lo:hi], float64: kind 0 sum |x|, 1 sum x^2, 2 max |x| (NaN wins), 3 sum |x|^p.
    Sums over 32 interleaved lanes combined as kernels/numba/norm.py's _combine, tail in order."""
    acc = np.zeros(32)
    n = hi - lo
    n32 = lo + n - n % 32
    for i in range(lo, n32, 32):
        for j in range(32):
            v = abs(np.float64(x[i + j]))
            if kind == 0:
                acc[j] += v
            elif kind == 1:
                acc[j] += v * v
            elif kind == 2:
                if not v <= acc[j]:  # NaN propagates
                    acc[j] = v
            else:
                acc[j] += v ** p
    if kind == 2:
        s = 0.0
        for j in range(32):
            if not acc[j] <= s:
                s = acc[j]
        for i in range(n32, hi):
            v = abs(np.float64(x[i]))
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
        v = abs(np.float64(x[i]))
        if kind == 0:
            s += v
        elif kind == 1:
            s += v * v
        else:
            s += v ** p
    return s


@njit(**_OPTS)
def reduce_partials_serial(x, partials, kind, p):
    n = x.shape[0]
    for c in range(partials.shape[0]):
        partials[c] = _reduce_block(x, c * REDUCE_CHUNK, min(n, (c + 1) * REDUCE_CHUNK), kind, p)


@njit(parallel=True, **_OPTS)
def reduce_partials_parallel(x, partials, kind, p):
    n = x.shape[0]
    for c in prange(partials.shape[0]):
        partials[c] = _reduce_block(x, c * REDUCE_CHUNK, min(n, (c + 1) * REDUCE_CHUNK), kind, p)
