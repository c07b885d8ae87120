"""Row-wise divergences (entropy, KL, cross-entropy, JS) for numba.cuda.

The formulas of kernels/numba/divergence.py on C-contiguous (m, n) device arrays: one block per
row; thread t accumulates elements t, t + THREADS, ... in order in float64, and a shared-memory
tree in a fixed order combines the threads (deterministic run to run; not bitwise equal to the
CPU backends, which use their own exp/log and 32 lanes). Loads are converted to float64 first
(the simulator then computes in float64 too); special cases are branches, so the simulator
never calls math.log on 0 or a negative number.
"""
import math

from numba import cuda, float64

from .norm import THREADS, _block_sum  # the fixed reduction tree, shared

ENTROPY, KL, CROSS, JS = 0, 1, 2, 3


@cuda.jit(device=True)
def _rel_entr(x, y):
    if x != x or y != y:
        return math.nan
    if x > 0.0 and y > 0.0:
        return x * math.log(x / y)
    if x == 0.0 and y >= 0.0:
        return 0.0
    return math.inf


@cuda.jit(device=True)
def _term(mode, x, y):
    if mode == ENTROPY:
        if x > 0.0:
            return -(x * math.log(x))
        if x == 0.0:
            return 0.0
        return -math.inf if x < 0.0 else math.nan
    if mode == KL:
        return _rel_entr(x, y)
    if mode == CROSS:
        if x != x or y != y or x < 0.0 or y < 0.0:
            return math.nan
        if x == 0.0:
            return 0.0
        return -(x * math.log(y)) if y > 0.0 else math.inf
    mm = (x + y) * 0.5
    return _rel_entr(x, mm) + _rel_entr(y, mm)


@cuda.jit
def divergence_rows(mode, p, q, out, factor):
    """out[r] = factor * sum of the ``mode`` term over the normalized rows p[r], q[r]."""
    buf = cuda.shared.array(THREADS, float64)
    r = cuda.blockIdx.x
    t = cuda.threadIdx.x
    n = p.shape[1]
    sp = 0.0
    sq = 0.0
    for i in range(t, n, THREADS):
        sp += float64(p[r, i])
        sq += float64(q[r, i])
    rp = 1.0 / _block_sum(buf, t, sp)
    rq = 1.0 / _block_sum(buf, t, sq)
    s = 0.0
    for i in range(t, n, THREADS):
        s += _term(mode, float64(p[r, i]) * rp, float64(q[r, i]) * rq)
    total = _block_sum(buf, t, s)
    if t == 0:
        out[r] = total * factor
