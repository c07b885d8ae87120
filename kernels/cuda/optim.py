"""Optimizer update kernels (SGD, Adagrad, Adadelta, RMSprop, Adam/AdamW) for numba.cuda.

One thread per element (grid-stride loop), each element of param, grad and state read once
and written once: the fused single pass of kernels/numba/optim.py, with the same operations in
the same order. The scalars come in ``c``, a small device array of the param's dtype, so the
arithmetic stays in that dtype (a float64 kernel argument would promote float32 math);
``cuda.fma`` stands where the CPU kernels call fma. The sqrt is the device's (correctly
rounded). The CUDA simulator evaluates ``math.sqrt`` in float64 (a Python float, rounded to the
dtype by the next operation, or not before a division by another one), so results there can
differ from the CPU backends by an ulp; NVVM may also contract other multiply-adds.
"""
import math

from numba import cuda


@cuda.jit(device=True)
def _lerp(a, b, w, one_minus_w, small):
    d = b - a
    if small:
        return cuda.fma(w, d, a)
    return cuda.fma(-d, one_minus_w, b)


@cuda.jit
def sgd(p, g, buf, c, has_wd, has_mom, nesterov, maximize, first):
    """c: -lr, momentum, 1 - dampening, weight_decay."""
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, p.shape[0], stride):
        d = -g[i] if maximize else g[i]
        if has_wd:
            d = cuda.fma(c[3], p[i], d)
        if has_mom:
            b = d if first else cuda.fma(c[2], d, buf[i] * c[1])
            buf[i] = b
            d = cuda.fma(c[1], b, d) if nesterov else b
        p[i] = cuda.fma(c[0], d, p[i])


@cuda.jit
def adagrad(p, g, s, c, has_wd, maximize):
    """c: -clr, weight_decay, eps."""
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, p.shape[0], stride):
        d = -g[i] if maximize else g[i]
        if has_wd:
            d = cuda.fma(c[1], p[i], d)
        acc = cuda.fma(d, d, s[i])
        s[i] = acc
        p[i] = p[i] + (c[0] * d) / (math.sqrt(acc) + c[2])


@cuda.jit
def adadelta(p, g, sq, acc, c, has_wd, maximize):
    """c: -lr, rho, 1 - rho, eps, weight_decay."""
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, p.shape[0], stride):
        d = -g[i] if maximize else g[i]
        if has_wd:
            d = cuda.fma(c[4], p[i], d)
        s = cuda.fma(c[2] * d, d, sq[i] * c[1])
        sq[i] = s
        delta = (math.sqrt(acc[i] + c[3]) / math.sqrt(s + c[3])) * d
        acc[i] = cuda.fma(c[2] * delta, delta, acc[i] * c[1])
        p[i] = cuda.fma(c[0], delta, p[i])


@cuda.jit
def rmsprop(p, g, sq, ga, buf, c, has_wd, has_mom, centered, maximize, small):
    """c: -lr, alpha, 1 - alpha (the lerp weight), 1 - that weight, eps, weight_decay, momentum."""
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, p.shape[0], stride):
        d = -g[i] if maximize else g[i]
        if has_wd:
            d = cuda.fma(c[5], p[i], d)
        s = cuda.fma(c[2] * d, d, sq[i] * c[1])
        sq[i] = s
        if centered:
            a = _lerp(ga[i], d, c[2], c[3], small)
            ga[i] = a
            avg = math.sqrt(cuda.fma(-a, a, s)) + c[4]
        else:
            avg = math.sqrt(s) + c[4]
        if has_mom:
            b = buf[i] * c[6] + d / avg
            buf[i] = b
            p[i] = cuda.fma(c[0], b, p[i])
        else:
            p[i] = p[i] + (c[0] * d) / avg


@cuda.jit
def adam(p, g, m, v, vmax, c, has_wd, decoupled, amsgrad, maximize, small):
    """c: 1 - beta1 (the lerp weight), 1 - that weight, beta2, 1 - beta2, eps, weight_decay,
    1 - lr * weight_decay, -step_size, bias_correction2_sqrt."""
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, p.shape[0], stride):
        d = -g[i] if maximize else g[i]
        x = p[i]
        if has_wd:
            if decoupled:
                x = x * c[6]
            else:
                d = cuda.fma(c[5], x, d)
        a = _lerp(m[i], d, c[0], c[1], small)
        m[i] = a
        s = cuda.fma(c[3] * d, d, v[i] * c[2])
        v[i] = s
        if amsgrad:
            mx = vmax[i]
            if not (s >= mx or s != s):
                s = mx
            vmax[i] = s
        p[i] = x + (c[7] * a) / (math.sqrt(s) / c[8] + c[4])
