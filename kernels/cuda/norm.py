"""Row-normalization kernels (LayerNorm, RMSNorm) for numba.cuda.

The same formulas as kernels/numba/norm.py on C-contiguous (m, n) device arrays, RMSNorm
being LayerNorm with the mean fixed at 0 (``center=False``). Forward and the dx part of the
backward run one block per row; thread t accumulates elements t, t + THREADS, ... in order in
float64, then a shared-memory tree in a fixed order combines the threads: deterministic from
run to run (not bitwise equal to the CPU backends: the order differs, and NVVM contracts
multiply-adds into FMAs, which the CPU kernels avoid). dweight/dbias: one
thread per column sums its column over the rows in order.

Every load is converted to float64 (``float64(x[r, i])``) before any arithmetic. Compiled, numba
would promote float32 to float64 anyway; the explicit conversion gives the CUDA simulator
(Python scalars under NumPy 2's promotion rules, where ``0.0 + float32`` is float32) the
same float64 arithmetic as the device. y is computed in float64 and rounded once to y's
dtype (the CPU rounds xhat to y's dtype before the affine part: at most one ulp apart).
"""
import math

from numba import config, cuda, float64

# threads per block (a power of two); fewer in the simulator, which runs each as a Python thread
THREADS = 32 if config.ENABLE_CUDASIM else 256


@cuda.jit(device=True)
def _block_reduce(buf, t, v, take_max):
    """Sum (max when ``take_max``) of ``v`` over the block's threads, the same tree every
    time; all threads get it."""
    buf[t] = v
    cuda.syncthreads()
    step = THREADS // 2
    while step > 0:
        if t < step:
            if take_max:
                o = buf[t + step]
                if o > buf[t]:
                    buf[t] = o
            else:
                buf[t] += buf[t + step]
        cuda.syncthreads()
        step //= 2
    total = buf[0]
    cuda.syncthreads()
    return total


@cuda.jit(device=True)
def _block_sum(buf, t, v):
    """Sum of ``v`` over the block's threads, the same tree every time; all threads get it."""
    return _block_reduce(buf, t, v, False)


@cuda.jit(device=True)
def _block_max(buf, t, v):
    """Max of ``v`` over the block's threads (no ``v`` may be NaN); all threads get it."""
    return _block_reduce(buf, t, v, True)


@cuda.jit
def norm_forward(x, w, b, y, mean, rstd, center, has_w, has_b, eps):
    """One block per row r: mean (0 unless center), rstd = 1/sqrt(var + eps), and
    y = (x - mean) * rstd * w + b (w, b where given)."""
    buf = cuda.shared.array(THREADS, float64)
    r = cuda.blockIdx.x
    t = cuda.threadIdx.x
    n = x.shape[1]
    s = 0.0
    if center:
        for i in range(t, n, THREADS):
            s += float64(x[r, i])
    mu = _block_sum(buf, t, s) / n if center else 0.0
    q = 0.0
    for i in range(t, n, THREADS):
        d = float64(x[r, i]) - mu
        q += d * d
    rs = 1.0 / math.sqrt(_block_sum(buf, t, q) / n + eps)
    for i in range(t, n, THREADS):
        v = (float64(x[r, i]) - mu) * rs
        if has_w:
            v = v * w[i]
        if has_b:
            v = v + b[i]
        y[r, i] = v
    if t == 0:
        mean[r] = mu
        rstd[r] = rs


@cuda.jit
def norm_backward_rows(dy, x, w, dx, mean, rstd, center, has_w):
    """One block per row: dx = ((g - mean(g)) - xhat * mean(g * xhat)) * rstd, g = dy * w,
    xhat = (x - mean) * rstd (mean(g) left out when not centering)."""
    buf = cuda.shared.array(THREADS, float64)
    r = cuda.blockIdx.x
    t = cuda.threadIdx.x
    n = x.shape[1]
    mu = mean[r]
    rs = rstd[r]
    sg = 0.0
    sgx = 0.0
    for i in range(t, n, THREADS):
        g = float64(dy[r, i]) * (w[i] if has_w else 1.0)
        sg += g
        sgx += g * ((float64(x[r, i]) - mu) * rs)
    mg = _block_sum(buf, t, sg) / n if center else 0.0
    mgx = _block_sum(buf, t, sgx) / n
    for i in range(t, n, THREADS):
        g = float64(dy[r, i]) * (w[i] if has_w else 1.0)
        dx[r, i] = ((g - mg) - ((float64(x[r, i]) - mu) * rs) * mgx) * rs


@cuda.jit
def norm_backward_columns(dy, x, mean, rstd, dw, db, want_dw, want_db):
    """One thread per column j: dw[j] = sum_r dy * xhat, db[j] = sum_r dy, rows in order."""
    j = cuda.grid(1)
    if j >= x.shape[1]:
        return
    sw = 0.0
    sb = 0.0
    for r in range(x.shape[0]):
        d = float64(dy[r, j])
        sw += d * ((float64(x[r, j]) - mean[r]) * rstd[r])
        sb += d
    if want_dw:
        dw[j] = sw
    if want_db:
        db[j] = sb
