"""Philox dropout and Gaussian noise for numba.cuda: the stream of kernels/numba/dropout.py;
and the norms, penalties and in-place updates of fastnorm.regularization.

The block function is the same Python source (``philox4x32_10``) compiled as a device
function, and the element -> (block, word) layout is the same, so masks equal the CPU
backends' bit for bit. One thread per Philox block: block b of tile t = b >> 6 owns elements
(t << 8) + (w << 6) + (b & 63), w = 0..3, so neighbouring threads write neighbouring elements.
Normals: thread i computes normal i from words 2i and 2i + 1 of stream 1 (two blocks);
log/cos/sqrt are CUDA's libdevice, not the CPU's libm: equal to the CPU within a few ulps, not
bitwise. Uniform numbers: word i of stream 0 times 2^-32, as on the CPU (bitwise equal).

Norms of arrays (penalties, clipping): each block accumulates its grid-stride elements in
float64, then norm.py's block tree; per-array partials are combined by one block, arrays in
the order given. Not the CPU's order (32 lanes in chunks of 2^16): equal within rounding.
"""
import math

from numba import cuda, float64, uint64

from ..numba.dropout import LO, S32, TWO_M32, TWO_PI, philox4x32_10
from .norm import THREADS, _block_max, _block_sum

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
def normal_apply(x, y, offset, k0, k1, a, b, mode):
    """Normals offset + i: mode 0: y = a + b z; mode 1: y = x * (a + b z) (float64, rounded once)."""
    n = y.shape[0]
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for i in range(start, n, stride):
        g = uint64(2 * (i + offset))
        u1 = (float64(_word(g, uint64(1), k0, k1)) + 0.5) * TWO_M32
        u2 = float64(_word(g + uint64(1), uint64(1), k0, k1)) * TWO_M32
        z = a + b * (math.sqrt(-2.0 * math.log(u1)) * math.cos(TWO_PI * u2))
        if mode == 0:
            y[i] = z
        else:
            y[i] = float64(x[i]) * z


@cuda.jit
def uniform_fill(y, offset, k0, k1, low, width):
    """y[i] = low + width * (word offset + i of stream 0) * 2^-32, float64 rounded once."""
    for i in range(cuda.grid(1), y.shape[0], cuda.gridsize(1)):
        y[i] = low + width * (float64(_word(uint64(i + offset), uint64(0), k0, k1)) * TWO_M32)


# ---------------------------------------------------------------- norms of arrays

SUM_ABS, SUM_SQ, MAX_ABS, SUM_POW = 0, 1, 2, 3


@cuda.jit(device=True)
def _max_nan(s, nan, v):
    """(max(s, v), nan): a NaN v sets the flag instead (the tree's max must not see NaN)."""
    if v != v:
        return s, 1.0
    return (v if v > s else s), nan


@cuda.jit(device=True)
def _tree(buf, t, s, nan, kind):
    """The block's sum (max when kind is MAX_ABS; NaN when any thread saw one)."""
    if kind == MAX_ABS:
        m = _block_max(buf, t, s)
        return math.nan if _block_sum(buf, t, nan) > 0.0 else m
    return _block_sum(buf, t, s)


@cuda.jit
def reduce_partials(x, kind, p, partials):
    """partials[b] = block b's float64 reduction ``kind`` of |x| over its grid-stride elements:
    sum |x|, sum x^2, max |x| (NaN wins), sum |x|^p."""
    buf = cuda.shared.array(THREADS, float64)
    t = cuda.threadIdx.x
    s = 0.0
    nan = 0.0
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        v = abs(float64(x[i]))
        if kind == SUM_ABS:
            s += v
        elif kind == SUM_SQ:
            s += v * v
        elif kind == MAX_ABS:
            s, nan = _max_nan(s, nan, v)
        else:
            s += v ** p
    total = _tree(buf, t, s, nan, kind)
    if t == 0:
        partials[cuda.blockIdx.x] = total


@cuda.jit(device=True)
def _root(s, kind, p):
    if kind == SUM_SQ:
        return math.sqrt(s)
    if kind == SUM_POW:
        return s ** (1.0 / p)
    return s


@cuda.jit
def combine_partials(partials, kind, p, norms, out):
    """One block: each array a's partials (row a) combined, then over the arrays in order:
    ``norms`` False: out[0] = sum of the arrays' reductions (the penalties); True: the
    ``kind`` norm of the arrays' norms (grad_norm: root(sum root_a^p), or the max)."""
    buf = cuda.shared.array(THREADS, float64)
    t = cuda.threadIdx.x
    total = 0.0
    for a in range(partials.shape[0]):
        s = 0.0
        nan = 0.0
        for b in range(t, partials.shape[1], THREADS):
            if kind == MAX_ABS:
                s, nan = _max_nan(s, nan, partials[a, b])
            else:
                s += partials[a, b]
        r = _tree(buf, t, s, nan, kind)
        if not norms:
            total += r
        elif kind == MAX_ABS:
            if not r <= total:  # NaN wins
                total = r
        else:
            r = _root(r, kind, p)
            if kind == SUM_SQ:
                total += r * r
            elif kind == SUM_ABS:
                total += r
            else:
                total += r ** p
    if t == 0:
        out[0] = _root(total, kind, p) if norms else total


@cuda.jit
def clip_coef(total, max_norm, c):
    """c[0] = min(max_norm / (total + 1e-6), 1) in c's dtype (0 for an infinite total, NaN for
    a NaN one): clip_grad_norm_'s factor."""
    tot = total[0]
    coef = max_norm / (tot + 1e-6) if tot != math.inf else 0.0
    if tot != tot:
        coef = math.nan
    elif coef > 1.0:
        coef = 1.0
    c[0] = coef


@cuda.jit
def scale_(g, c):
    """g *= c[0], in g's dtype (c holds one value of g's dtype)."""
    for i in range(cuda.grid(1), g.shape[0], cuda.gridsize(1)):
        g[i] = g[i] * c[0]


@cuda.jit
def penalty_grad_(w, g, c, l1):
    """g += sign(w) * c[0] (l1; sign(NaN) = NaN) or g += w * c[0] (c[0] = 2 coeff), in w's dtype."""
    for i in range(cuda.grid(1), g.shape[0], cuda.gridsize(1)):
        v = w[i]
        if l1:
            if v > 0:
                d = c[0]
            elif v < 0:
                d = -c[0]
            elif v == 0:
                d = c[0] - c[0]
            else:
                d = v
        else:
            d = v * c[0]
        g[i] = g[i] + d


@cuda.jit
def l1_prox_(w, c):
    """w = copysign(max(|w| - c[0], 0), w), NaN staying NaN (soft thresholding)."""
    for i in range(cuda.grid(1), w.shape[0], cuda.gridsize(1)):
        v = w[i]
        a = abs(v) - c[0]
        if not a > 0:
            a = a if a != a else a - a
        w[i] = math.copysign(a, v)
