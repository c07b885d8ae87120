"""Row-wise divergences (entropy, KL, cross-entropy, JS), softmax, log-softmax and softmax
cross-entropy for numba.cuda.

The formulas of kernels/numba/divergence.py on C-contiguous (m, n) device arrays: one block per
row; thread t accumulates elements t, t + THREADS, ... in order in float64, and a shared-memory
tree in a fixed order combines the threads (deterministic run to run; not bitwise equal to the
CPU backends, which use their own exp/log and 32 lanes). Loads are converted to float64 first
(the simulator then computes in float64 too); special cases are branches, so the simulator
never calls math.log on 0 or a negative number. Softmax rows: the row maximum (NaN skipped, as
on the CPU) by the same block tree, then exp(x - max) summed in float64; exp/log are CUDA's
libdevice in float64 (the CPU backends: their own exp/log, float32 exp for float32 logits),
so results agree with the CPU within a few ulps, not bitwise.
"""
import math

from numba import cuda, float64

from .norm import THREADS, _block_max, _block_sum  # the fixed reduction tree, shared

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
def divergence_rows(mode, p, q, out, factor, root):
    """out[r] = factor * sum of the ``mode`` term over the normalized rows p[r], q[r]
    (its square root when ``root``: the JS distance)."""
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
        out[r] = math.sqrt(total * factor) if root else total * factor


@cuda.jit(device=True)
def _max_exp_sum(buf, t, x, r):
    """(max, sum of exp(x - max)) of row r, every thread gets both."""
    n = x.shape[1]
    mx = -math.inf
    for i in range(t, n, THREADS):
        v = float64(x[r, i])
        if v > mx:
            mx = v
    mx = _block_max(buf, t, mx)
    s = 0.0
    for i in range(t, n, THREADS):
        s += math.exp(float64(x[r, i]) - mx)
    return mx, _block_sum(buf, t, s)


@cuda.jit
def softmax_rows(x, y, log):
    """One block per row: y[r] = softmax(x[r]) (log_softmax when ``log``)."""
    buf = cuda.shared.array(THREADS, float64)
    r = cuda.blockIdx.x
    t = cuda.threadIdx.x
    mx, s = _max_exp_sum(buf, t, x, r)
    if log:
        ls = math.log(s)
        for i in range(t, x.shape[1], THREADS):
            y[r, i] = (float64(x[r, i]) - mx) - ls
    else:
        rs = 1.0 / s
        for i in range(t, x.shape[1], THREADS):
            y[r, i] = math.exp(float64(x[r, i]) - mx) * rs


@cuda.jit
def softmax_cross_entropy_rows(x, labels, w, has_w, wsum, ignore_index, eps, gscale, want_grad,
                               loss, dx):
    """One block per row r: loss[r] (float64), and dx[r] = gscale[r] * d loss[r] / d x[r] when
    ``want_grad``: loss = (1-eps) w_y (lse - x_y) + eps/C sum_c w_c (lse - x_c) (the CPU's
    formula, kernels/numba/divergence.py _sce_row)."""
    buf = cuda.shared.array(THREADS, float64)
    r = cuda.blockIdx.x
    t = cuda.threadIdx.x
    n = x.shape[1]
    label = labels[r]
    if label == ignore_index:  # the whole block takes this branch
        if want_grad:
            for i in range(t, n, THREADS):
                dx[r, i] = 0.0
        if t == 0:
            loss[r] = 0.0
        return
    mx, s = _max_exp_sum(buf, t, x, r)
    ls = math.log(s)
    wy = w[label] if has_w else 1.0
    total = (1.0 - eps) * (wy * (ls - (float64(x[r, label]) - mx)))
    eb = eps / n
    if eps > 0.0:
        q = 0.0
        for i in range(t, n, THREADS):
            q += (ls - (float64(x[r, i]) - mx)) * (w[i] if has_w else 1.0)
        total += eb * _block_sum(buf, t, q)
    if t == 0:
        loss[r] = total
    if want_grad:
        a = (1.0 - eps) * wy + eb * wsum
        rs = 1.0 / s
        g = gscale[r]
        for i in range(t, n, THREADS):
            e = math.exp(float64(x[r, i]) - mx) * rs
            if i == label:
                dx[r, i] = (a * e - (eb * wy + (1.0 - eps) * wy)) * g
            else:
                dx[r, i] = (a * e - eb * (w[i] if has_w else 1.0)) * g


@cuda.jit
def sum_to(values, divisor, out):
    """One block: out[0] = sum(values) / divisor (float64, the block tree)."""
    buf = cuda.shared.array(THREADS, float64)
    t = cuda.threadIdx.x
    s = 0.0
    for i in range(t, values.shape[0], THREADS):
        s += values[i]
    total = _block_sum(buf, t, s)
    if t == 0:
        out[0] = total / divisor


@cuda.jit
def cast(a, out):
    """out = a, rounded to out's dtype."""
    i = cuda.grid(1)
    if i < a.shape[0]:
        out[i] = a[i]
