"""Batch-statistics kernels (BatchNorm, InstanceNorm, GroupNorm) for numba.cuda.

Data is a C-contiguous (outer, C, inner) device array, as on the CPU. Statistics: one block per
(o, c) segment (thread t takes elements t, t + THREADS, ... in order, in float64; a fixed
shared-memory tree combines the threads) gives the segment's (mean, m2); for BatchNorm one
thread per channel then merges the segments over o in order with Chan's formula, the same
formula as the CPU kernels and ``fastnorm.functional.merge_moments``. When ``inner`` is small
(channels-last, (N, C)) one block per channel takes the whole channel instead
(``channel_moments``, ``channel_grad_sums``). Deterministic from run
to run; not bitwise equal to the CPU backends (another order, and NVVM contracts multiply-adds).
The elementwise passes run one thread per element. Every load is converted to float64 first
(see kernels/cuda/norm.py: the simulator would otherwise add float32 in float32).
"""
from numba import cuda, float64

from .norm import THREADS, _block_sum


@cuda.jit
def segment_moments(x, mean, m2):
    """Block (o, c): mean and m2 of x[o, c, :] into mean[o, c], m2[o, c]."""
    buf = cuda.shared.array(THREADS, float64)
    C = x.shape[1]
    o = cuda.blockIdx.x // C
    c = cuda.blockIdx.x % C
    t = cuda.threadIdx.x
    n = x.shape[2]
    s = 0.0
    for i in range(t, n, THREADS):
        s += float64(x[o, c, i])
    mu = _block_sum(buf, t, s) / n
    q = 0.0
    for i in range(t, n, THREADS):
        d = float64(x[o, c, i]) - mu
        q += d * d
    q = _block_sum(buf, t, q)
    if t == 0:
        mean[o, c] = mu
        m2[o, c] = q


@cuda.jit
def merge_segments(mean_s, m2_s, count, mean, m2):
    """Thread c: Chan-merge the segments (mean_s, m2_s)[:, c] of ``count`` values each, in order."""
    c = cuda.grid(1)
    if c >= mean_s.shape[1]:
        return
    na = 0.0
    ma = 0.0
    qa = 0.0
    for o in range(mean_s.shape[0]):
        mb = mean_s[o, c]
        qb = m2_s[o, c]
        if na == 0.0:
            na, ma, qa = count, mb, qb
        else:
            n = na + count
            d = mb - ma
            ma = ma + d * (count / n)
            qa = (qa + qb) + d * d * (na * count / n)
            na = n
    mean[c] = ma
    m2[c] = qa


@cuda.jit
def segment_grad_sums(dy, x, mean, rstd, s1, s2):
    """Block (o, c): s1 = sum dy, s2 = sum dy * (x - mean) * rstd over x[o, c, :]; mean/rstd
    of shape (1, C) or (outer, C)."""
    buf = cuda.shared.array(THREADS, float64)
    C = x.shape[1]
    o = cuda.blockIdx.x // C
    c = cuda.blockIdx.x % C
    q = o if mean.shape[0] > 1 else 0
    mu = mean[q, c]
    rs = rstd[q, c]
    t = cuda.threadIdx.x
    a = 0.0
    b = 0.0
    for i in range(t, x.shape[2], THREADS):
        g = float64(dy[o, c, i])
        a += g
        b += g * ((float64(x[o, c, i]) - mu) * rs)
    a = _block_sum(buf, t, a)
    b = _block_sum(buf, t, b)
    if t == 0:
        s1[o, c] = a
        s2[o, c] = b


@cuda.jit
def sum_segments(s1, s2, out1, out2):
    """Thread c: out = sum over o, in order, of s[o, c]."""
    c = cuda.grid(1)
    if c >= s1.shape[1]:
        return
    a = 0.0
    b = 0.0
    for o in range(s1.shape[0]):
        a += s1[o, c]
        b += s2[o, c]
    out1[c] = a
    out2[c] = b


@cuda.jit
def affine_apply(x, mean, scale, shift, y):
    """y = (x - mean) * scale + shift per (o, c) (coefficients (1, C) or (outer, C))."""
    k = cuda.grid(1)
    outer, C, inner = x.shape
    if k >= outer * C * inner:
        return
    i = k % inner
    oc = k // inner
    c = oc % C
    o = oc // C
    q = o if mean.shape[0] > 1 else 0
    y[o, c, i] = (float64(x[o, c, i]) - mean[q, c]) * scale[q, c] + shift[q, c]


@cuda.jit
def grad_apply(dy, x, mean, A, B, Cc, dx):
    """dx = (A * dy + B * (x - mean)) + Cc per (o, c)."""
    k = cuda.grid(1)
    outer, C, inner = x.shape
    if k >= outer * C * inner:
        return
    i = k % inner
    oc = k // inner
    c = oc % C
    o = oc // C
    q = o if mean.shape[0] > 1 else 0
    d = float64(dy[o, c, i])
    dx[o, c, i] = (A[q, c] * d + B[q, c] * (float64(x[o, c, i]) - mean[q, c])) + Cc[q, c]


@cuda.jit
def channel_moments(x, mean, m2):
    """Block c: mean and m2 of channel c over all of x[:, c, :] (for small ``inner``, e.g.
    channels-last, where a block per segment would have almost nothing to do); thread t takes
    the flat indices t, t + THREADS, ... of the channel's outer * inner values."""
    buf = cuda.shared.array(THREADS, float64)
    c = cuda.blockIdx.x
    t = cuda.threadIdx.x
    inner = x.shape[2]
    n = x.shape[0] * inner
    s = 0.0
    for k in range(t, n, THREADS):
        s += float64(x[k // inner, c, k % inner])
    mu = _block_sum(buf, t, s) / n
    q = 0.0
    for k in range(t, n, THREADS):
        d = float64(x[k // inner, c, k % inner]) - mu
        q += d * d
    q = _block_sum(buf, t, q)
    if t == 0:
        mean[c] = mu
        m2[c] = q


@cuda.jit
def channel_grad_sums(dy, x, mean, rstd, s1, s2):
    """Block c: sum dy and sum dy * (x - mean[c]) * rstd[c] over channel c (see channel_moments)."""
    buf = cuda.shared.array(THREADS, float64)
    c = cuda.blockIdx.x
    t = cuda.threadIdx.x
    inner = x.shape[2]
    n = x.shape[0] * inner
    mu = mean[0, c]
    rs = rstd[0, c]
    a = 0.0
    b = 0.0
    for k in range(t, n, THREADS):
        o = k // inner
        i = k % inner
        g = float64(dy[o, c, i])
        a += g
        b += g * ((float64(x[o, c, i]) - mu) * rs)
    a = _block_sum(buf, t, a)
    b = _block_sum(buf, t, b)
    if t == 0:
        s1[c] = a
        s2[c] = b
