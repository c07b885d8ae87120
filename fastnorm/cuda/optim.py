"""The fastnorm.optim.functional steps on CUDA device arrays (kernels in kernels/cuda/optim.py).

``fastnorm.optim.functional.adam_`` and friends come here when ``param`` is a device array:
same arguments and semantics. Param and state arrays must be C-contiguous device arrays of one
float dtype (they are updated in place); grad may be a device array or a host array (copied
over). Returns ``param``.
"""
import math

import numpy as np
from numba import config, cuda

from .norm import _device
from .._dispatch import on_device
from ..kernels.cuda import optim as K
from ..optim._coef import adagrad_coef, adam_coef, check_step

_THREADS = 32 if config.ENABLE_CUDASIM else 256
_MAX_BLOCKS = 2 if config.ENABLE_CUDASIM else 1024


# ---------------------------------------------------------------- the optimizer classes' helpers


def check_param(p):
    """A device param of an optimizer class: a C-contiguous float32/float64 device array."""
    _device(p, "params")


def check_grad(grad, p, k):
    """grads[k] for the device param ``p``: a device array, or a host one (copied over)."""
    gd = np.dtype(grad.dtype) if hasattr(grad, "dtype") else np.asarray(grad).dtype
    if tuple(grad.shape if hasattr(grad, "shape") else np.shape(grad)) != tuple(p.shape):
        raise ValueError(f"grads[{k}] must have its param's shape {tuple(p.shape)}, got "
                         f"{tuple(np.shape(grad) if not hasattr(grad, 'shape') else grad.shape)}")
    if gd.newbyteorder("=") != np.dtype(p.dtype):
        raise TypeError(f"grads[{k}] must have its param's dtype {np.dtype(p.dtype)}, got {gd}")
    return grad


def full_like(p, value):
    return cuda.to_device(np.full(tuple(p.shape), value, np.dtype(p.dtype)))


def to_device(a):
    return cuda.to_device(np.ascontiguousarray(a))


def _state(a, name, param):
    if not on_device(a):
        raise TypeError(f"{name} must be a device array when param is one (it is updated in place)")
    return _device(a, name, param.dtype, param.shape)


def _prepare(param, grad):
    p = _state(param, "param", param) if on_device(param) else None
    if p is None:
        raise TypeError("param must be a device array")
    if np.dtype(p.dtype) not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"param must be a float32 or float64 array, got dtype {p.dtype}")
    gd = np.dtype(grad.dtype) if hasattr(grad, "dtype") else np.asarray(grad).dtype
    if gd.newbyteorder("=") != np.dtype(p.dtype):
        raise TypeError(f"grad must have param's dtype {np.dtype(p.dtype)}, got {gd}")
    g = _device(grad, "grad", p.dtype, p.shape)
    return p, g


def _launch(kernel, p, *args):
    n = p.size
    if n:
        blocks = max(1, min(_MAX_BLOCKS, math.ceil(n / _THREADS)))
        kernel[blocks, _THREADS](*args)
    return p


def _coef(p, *values):
    return cuda.to_device(np.array(values, dtype=p.dtype))


def _flat(a):
    return a.reshape(a.size)


def sgd_(param, grad, momentum_buffer=None, *, lr, momentum=0.0, dampening=0.0,
         weight_decay=0.0, nesterov=False, maximize=False, first_step=False):
    p, g = _prepare(param, grad)
    buf = _state(momentum_buffer, "momentum_buffer", p) if momentum != 0 else p
    if momentum != 0 and momentum_buffer is None:
        raise ValueError("momentum_buffer is required when momentum != 0")
    c = _coef(p, -lr, momentum, 1.0 - dampening, weight_decay)
    _launch(K.sgd, p, _flat(p), _flat(g), _flat(buf), c, weight_decay != 0, momentum != 0,
            bool(nesterov), bool(maximize), bool(first_step))
    return param


def adagrad_(param, grad, state_sum, step, *, lr=1e-2, lr_decay=0.0, weight_decay=0.0,
             eps=1e-10, maximize=False):
    p, g = _prepare(param, grad)
    s = _state(state_sum, "state_sum", p)
    clr, wd, eps, _ = adagrad_coef(lr, lr_decay, weight_decay, eps, maximize, check_step(step))
    _launch(K.adagrad, p, _flat(p), _flat(g), _flat(s), _coef(p, -clr, wd, eps), wd != 0, bool(maximize))
    return param


def adadelta_(param, grad, square_avg, acc_delta, *, lr=1.0, rho=0.9, eps=1e-6,
              weight_decay=0.0, maximize=False):
    p, g = _prepare(param, grad)
    sq = _state(square_avg, "square_avg", p)
    acc = _state(acc_delta, "acc_delta", p)
    c = _coef(p, -lr, rho, 1.0 - rho, eps, weight_decay)
    _launch(K.adadelta, p, _flat(p), _flat(g), _flat(sq), _flat(acc), c, weight_decay != 0, bool(maximize))
    return param


def rmsprop_(param, grad, square_avg, *, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0,
             momentum=0.0, centered=False, maximize=False, grad_avg=None, momentum_buffer=None):
    p, g = _prepare(param, grad)
    sq = _state(square_avg, "square_avg", p)
    if centered and grad_avg is None:
        raise ValueError("grad_avg is required when centered=True")
    if momentum > 0 and momentum_buffer is None:
        raise ValueError("momentum_buffer is required when momentum > 0")
    ga = _state(grad_avg, "grad_avg", p) if centered else p
    buf = _state(momentum_buffer, "momentum_buffer", p) if momentum > 0 else p
    w = np.dtype(p.dtype).type(1.0 - alpha)
    c = _coef(p, -lr, alpha, w, 1 - w, eps, weight_decay, momentum)
    _launch(K.rmsprop, p, _flat(p), _flat(g), _flat(sq), _flat(ga), _flat(buf), c,
            weight_decay != 0, momentum > 0, bool(centered), bool(maximize), bool(abs(w) < 0.5))
    return param


def adam_(param, grad, exp_avg, exp_avg_sq, step, *, lr, beta1, beta2, eps, weight_decay=0.0,
          decoupled=False, max_exp_avg_sq=None, maximize=False):
    p, g = _prepare(param, grad)
    m = _state(exp_avg, "exp_avg", p)
    v = _state(exp_avg_sq, "exp_avg_sq", p)
    amsgrad = max_exp_avg_sq is not None
    vmax = _state(max_exp_avg_sq, "max_exp_avg_sq", p) if amsgrad else v
    coef = adam_coef(lr, beta1, beta2, eps, weight_decay, decoupled, amsgrad, maximize,
                     check_step(step))
    w1 = np.dtype(p.dtype).type(1.0 - beta1)
    c = _coef(p, w1, 1 - w1, beta2, 1.0 - beta2, eps, weight_decay, 1.0 - lr * weight_decay,
              -coef[8], coef[9])
    _launch(K.adam, p, _flat(p), _flat(g), _flat(m), _flat(v), _flat(vmax), c, weight_decay != 0,
            bool(decoupled), amsgrad, bool(maximize), bool(abs(w1) < 0.5))
    return param
