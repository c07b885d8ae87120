"""Independent references for the dropout group: Philox4x32-10 in plain Python ints (written
from the Random123 paper, key bumped *before* rounds 2..10, not shared with any kernel), the
element layout of fastnorm's streams, and float64 NumPy dropout built on them."""
import math

import numpy as np

M0, M1 = 0xD2511F53, 0xCD9E8D57
W0, W1 = 0x9E3779B9, 0xBB67AE85
MASK = 0xFFFFFFFF


def philox4x32_10(ctr, key):
    c0, c1, c2, c3 = ctr
    k0, k1 = key
    for r in range(10):
        if r:
            k0, k1 = (k0 + W0) & MASK, (k1 + W1) & MASK
        p0, p1 = M0 * c0, M1 * c2
        c0, c1, c2, c3 = (p1 >> 32) ^ c1 ^ k0, p1 & MASK, (p0 >> 32) ^ c3 ^ k1, p0 & MASK
    return c0, c1, c2, c3


def word(seed, index, stream=0):
    """32-bit word ``index`` of ``stream`` under ``seed``: word (index >> 6) & 3 of block
    ((index >> 8) << 6) + (index & 63) (fastnorm.kernels.numba.dropout's layout)."""
    b = ((index >> 8) << 6) + (index & 63)
    out = philox4x32_10((b & MASK, b >> 32, stream, 0), (seed & MASK, seed >> 32))
    return out[(index >> 6) & 3]


def bits(seed, n, offset=0, stream=0):
    return np.array([word(seed, offset + i, stream) for i in range(n)], np.uint32)


def dropout(x, p, seed):
    """float64 reference: x * [bits >= floor(p 2^32)] * (1 / (1 - p)) (C order)."""
    x = np.asarray(x, np.float64)
    keep = bits(seed, x.size).reshape(x.shape) >= math.floor(p * 2.0 ** 32)
    return np.where(keep, x * (1.0 / (1.0 - p)), 0.0 * x), keep


def normals(seed, n, offset=0):
    """Box-Muller on words 2i, 2i + 1 of stream 1."""
    out = np.empty(n)
    for k in range(n):
        i = offset + k
        u1 = (word(seed, 2 * i, 1) + 0.5) * 2.0 ** -32
        u2 = word(seed, 2 * i + 1, 1) * 2.0 ** -32
        out[k] = math.sqrt(-2.0 * math.log(u1)) * math.cos(2 * math.pi * u2)
    return out
