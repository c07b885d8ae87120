"""Philox dropout and Gaussian noise for numba.cuda: the stream of kernels/numba/dropout.py.

The block function is the same Python source (``philox4x32_10``) compiled as a device
function, and the element -> (block, word) layout is the same, so masks equal the CPU
backends' bit for bit. One thread per Philox block: block b of tile t = b >> 6 owns elements
(t << 8) + (w << 6) + (b & 63), w = 0..3, so neighbouring threads write neighbouring elements.
Normals: thread i computes normal i from words 2i and 2i + 1 of stream 1 (two blocks);
log/cos/sqrt are CUDA's libdevice, not the CPU's libm: equal to the CPU within a few ulps, not
bitwise.
"""
import math

from numba import cuda, float64, uint64

from ..numba.dropout import LO, S32, TWO_M32, TWO_PI, philox4x32_10

philox = cuda.jit(device=True)(philox4x32_10)


@cuda.jit(device=True)
def _word(g, stream, k0, k1):
    """Word g of ``stream`` (uint64 holding 32 bits)."""
    b = ((g >> uint64(8)) << uint64(6)) + (g & uint64(63))
    w0, w1, w2, w3 = philox(b & LO, b >> S32, stream, uint64(0), k0, k1)
    w = (g >> uint64(6)) & uint64(3)
    if w == 0:
        return w0
    if w == 1:
        return w1
    if w == 2:
        return w2
    return w3


@cuda.jit
def dropout_apply(x, y, k0, k1, thr, scale):
    """y = x * (scale if bits >= thr else 0)."""
    n = y.shape[0]
    nblocks = (((n - 1) >> 8) + 1) << 6
    for b in range(cuda.grid(1), nblocks, cuda.gridsize(1)):
        ub = uint64(b)
        w = philox(ub & LO, ub >> S32, uint64(0), uint64(0), k0, k1)
        base = ((b >> 6) << 8) + (b & 63)
        for k in range(4):
            i = base + (k << 6)
            if i < n:
                y[i] = x[i] * (scale if w[k] >= thr else scale - scale)


@cuda.jit
def dropout_mask(mask, k0, k1, thr):
    """mask = bits >= thr."""
    n = mask.shape[0]
    nblocks = (((n - 1) >> 8) + 1) << 6
    for b in range(cuda.grid(1), nblocks, cuda.gridsize(1)):
        ub = uint64(b)
        w = philox(ub & LO, ub >> S32, uint64(0), uint64(0), k0, k1)
        base = ((b >> 6) << 8) + (b & 63)
        for k in range(4):
            i = base + (k << 6)
            if i < n:
                mask[i] = w[k] >= thr


@cuda.jit
def normal_apply(x, y, k0, k1, a, b, mode):
    """mode 0: y = a + b z; mode 1: y = x * (a + b z) (float64, rounded once)."""
    n = y.shape[0]
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for i in range(start, n, stride):
        g = uint64(2 * i)
        u1 = (float64(_word(g, uint64(1), k0, k1)) + 0.5) * TWO_M32
        u2 = float64(_word(g + uint64(1), uint64(1), k0, k1)) * TWO_M32
        z = a + b * (math.sqrt(-2.0 * math.log(u1)) * math.cos(TWO_PI * u2))
        if mode == 0:
            y[i] = z
        else:
            y[i] = float64(x[i]) * z


