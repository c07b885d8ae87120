"""Coefficient rows of the optimizer steps: the scalar math shared by the CPU steps
(fastnorm.optim.functional, fastnorm.optim's classes) and the CUDA steps (fastnorm.cuda.optim).
"""
import numpy as np

# One row of float64 per tensor, in the column order of kernels/numba/optim.py. The Python
# float expressions are torch's, so the scalars the kernels round to the dtype are the same.


def sgd_coef(lr, momentum, dampening, weight_decay, nesterov, maximize, first):
    return (lr, momentum, dampening, weight_decay, nesterov, maximize, first)


def adagrad_coef(lr, lr_decay, weight_decay, eps, maximize, step):
    clr = lr / (1 + (float(step) - 1) * lr_decay)
    return (clr, weight_decay, eps, maximize)


def adadelta_coef(lr, rho, eps, weight_decay, maximize):
    return (lr, rho, eps, weight_decay, maximize)


def rmsprop_coef(lr, alpha, eps, weight_decay, momentum, centered, maximize):
    return (lr, alpha, eps, weight_decay, momentum, centered, maximize)


def adam_coef(lr, beta1, beta2, eps, weight_decay, decoupled, amsgrad, maximize, step):
    step = float(step)
    bias_correction1 = 1 - beta1 ** step
    bias_correction2 = 1 - beta2 ** step
    step_size = lr / bias_correction1
    bias_correction2_sqrt = bias_correction2 ** 0.5
    return (lr, beta1, beta2, eps, weight_decay, decoupled, amsgrad, maximize, step_size,
            bias_correction2_sqrt)


def check_step(step):
    if isinstance(step, bool) or not isinstance(step, (int, float, np.integer, np.floating)):
        raise TypeError(f"step must be a number (the step count after this update), got {type(step).__name__}")
    if not step >= 1:
        raise ValueError(f"step must be >= 1 (the step count after this update), got {step}")
    return float(step)
