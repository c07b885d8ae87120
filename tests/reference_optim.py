"""Float64 NumPy references of the optimizer steps, written from the formulas (torch's forms,
as the docstrings of fastnorm.optim.functional give them), independent of the kernels: no
fused multiply-adds, no per-op rounding to float32. Each returns the new (param, *state)."""
import numpy as np


def _f64(*arrays):
    return [None if a is None else np.asarray(a, np.float64).copy() for a in arrays]


def sgd(p, g, buf, *, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
        maximize=False, first_step=False):
    p, g, buf = _f64(p, g, buf)
    g = -g if maximize else g
    g = g + weight_decay * p
    if momentum != 0:
        buf = g.copy() if first_step else momentum * buf + (1 - dampening) * g
        g = g + momentum * buf if nesterov else buf
    return p - lr * g, buf


def adagrad(p, g, s, step, *, lr, lr_decay=0.0, weight_decay=0.0, eps=1e-10, maximize=False):
    p, g, s = _f64(p, g, s)
    g = -g if maximize else g
    g = g + weight_decay * p
    clr = lr / (1 + (step - 1) * lr_decay)
    s = s + g * g
    return p - clr * g / (np.sqrt(s) + eps), s


def adadelta(p, g, sq, acc, *, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, maximize=False):
    p, g, sq, acc = _f64(p, g, sq, acc)
    g = -g if maximize else g
    g = g + weight_decay * p
    sq = rho * sq + (1 - rho) * g * g
    delta = np.sqrt(acc + eps) / np.sqrt(sq + eps) * g
    acc = rho * acc + (1 - rho) * delta * delta
    return p - lr * delta, sq, acc


def rmsprop(p, g, sq, *, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
            centered=False, maximize=False, grad_avg=None, momentum_buffer=None):
    p, g, sq, ga, buf = _f64(p, g, sq, grad_avg, momentum_buffer)
    g = -g if maximize else g
    g = g + weight_decay * p
    sq = alpha * sq + (1 - alpha) * g * g
    if centered:
        ga = alpha * ga + (1 - alpha) * g
        avg = np.sqrt(sq - ga * ga) + eps
    else:
        avg = np.sqrt(sq) + eps
    if momentum > 0:
        buf = momentum * buf + g / avg
        p = p - lr * buf
    else:
        p = p - lr * g / avg
    return p, sq, ga, buf


def adam(p, g, m, v, step, *, lr, beta1, beta2, eps, weight_decay=0.0, decoupled=False,
         max_exp_avg_sq=None, maximize=False):
    p, g, m, v, vmax = _f64(p, g, m, v, max_exp_avg_sq)
    g = -g if maximize else g
    if decoupled:
        p = p * (1 - lr * weight_decay)
    else:
        g = g + weight_decay * p
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    if vmax is not None:
        vmax = np.maximum(vmax, v)
        vv = vmax
    else:
        vv = v
    m_hat = m / (1 - beta1 ** step)
    denom = np.sqrt(vv) / np.sqrt(1 - beta2 ** step) + eps
    return p - lr * m_hat / denom, m, v, vmax
