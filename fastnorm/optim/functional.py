"""Single-tensor in-place optimizer steps: ``import fastnorm.optim.functional as F``.

Each function updates ``param`` and its state arrays in place, in one fused pass over memory
(every element of param, grad and state read once and written once, no temporaries), and
returns ``param``. They are the steps the ``fastnorm.optim`` classes run, which hand the same
kernels all the tensors of a model in one parallel launch (``multi_step``).

Arithmetic is torch.optim's single-tensor step, op by op, in the param's dtype (see
kernels/numba/optim.py): float64 results equal torch's bit for bit; float32 results equal them
except where torch's vectorized sqrt (SLEEF, not correctly rounded) is one ulp off, so a few
ulp after tens of steps. Both CPU backends give identical bits for any thread count. Arrays
on a CUDA device run the numba.cuda kernels (fastnorm.cuda.optim).
"""
import functools

import numpy as np

from .. import _validation as v
from .._dispatch import _import_cython, device_function, kernels, on_device, threads_for
from ._coef import adadelta_coef, adagrad_coef, adam_coef, check_step, rmsprop_coef, sgd_coef

__all__ = ["sgd_", "adagrad_", "adadelta_", "rmsprop_", "adam_"]

#: elements per unit of parallel work (a multiple of every SIMD width)
CHUNK = 1 << 15

#: slots of each algorithm's pointer table, after param and grad
SLOTS = {
    "sgd": ("momentum_buffer",),
    "adagrad": ("sum",),
    "adadelta": ("square_avg", "acc_delta"),
    "rmsprop": ("square_avg", "grad_avg", "momentum_buffer"),
    "adam": ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
}


# ---------------------------------------------------------------- the launch


def chunk_table(sizes):
    """(C, 3) int64 rows (tensor, start, stop): every tensor cut into ranges of ``CHUNK``.

    Read-only and shared: the table of the same sizes is built once (a model steps the same
    tensors every time; building it took ~25 us of a ~45 us small step)."""
    return _chunk_table(tuple(sizes))


@functools.lru_cache(maxsize=32)
def _chunk_table(sizes):
    sizes = np.asarray(sizes, np.int64)
    counts = (sizes + CHUNK - 1) // CHUNK
    total = int(counts.sum())
    t = np.repeat(np.arange(len(sizes), dtype=np.int64), counts)
    first = np.repeat(np.cumsum(counts) - counts, counts)
    start = (np.arange(total, dtype=np.int64) - first) * CHUNK
    stop = np.minimum(start + CHUNK, sizes[t])
    table = np.ascontiguousarray(np.stack([t, start, stop], axis=1))
    table.flags.writeable = False
    return table


_PROTO = {dt: np.empty(0, dt) for dt in v.FLOAT_DTYPES}


def multi_step(algorithm, dtype, ptrs, chunks, coef, total):
    """One launch of ``algorithm``'s kernel over the tensors of ``ptrs``/``coef`` (all of
    ``dtype``, ``total`` elements in all) cut into ``chunks``."""
    if len(chunks):
        getattr(kernels("optim"), algorithm + "_step")(
            ptrs, chunks, np.ascontiguousarray(coef, np.float64), _PROTO[dtype], threads_for(total))


def address(a):
    return a.__array_interface__["data"][0]


try:
    _cython_addresses = _import_cython("optim").addresses
except ImportError:  # the cython extensions are not built
    _cython_addresses = None


def pointer_table(arrays, slots):
    """(len(arrays) // slots, slots) int64 table of the arrays' data addresses (0 for None);
    every array must be an ndarray (or None)."""
    out = np.empty(len(arrays), np.int64)
    if _cython_addresses is not None:
        _cython_addresses(arrays, out)
    else:
        out[:] = [0 if a is None else a.ctypes.data for a in arrays]
    return out.reshape(-1, slots)


def _is_kernel_ready(a):
    f = a.flags
    return f.c_contiguous and f.aligned and a.dtype.isnative


def _inplace(a, name, like):
    """An array updated in place: a writeable ndarray of param's shape and dtype."""
    if type(a) is not np.ndarray:
        raise TypeError(f"{name} must be a numpy.ndarray (it is updated in place), got "
                        f"{type(a).__name__}")
    if a.dtype.kind != "f" or a.dtype.itemsize not in (4, 8):
        raise TypeError(f"{name} must be a float32 or float64 array, got dtype {a.dtype}")
    if like is not None:
        if a.dtype.newbyteorder("=") != like.dtype.newbyteorder("="):
            raise TypeError(f"{name} must have param's dtype {like.dtype}, got {a.dtype}")
        v.same_shape(a, name, like, "param")
    if not a.flags.writeable:
        raise ValueError(f"{name} is read-only")
    return a


def _grad(grad, param):
    g = v.float_array(grad, "grad")
    v.same_shape(g, "grad", param, "param")
    if g.dtype != param.dtype.newbyteorder("="):
        raise TypeError(f"grad must have param's dtype {param.dtype}, got {g.dtype}")
    return g if _is_kernel_ready(g) else np.ascontiguousarray(g)


def _run_one(algorithm, param, grad, states, coef):
    """Checks done: run ``algorithm`` on one tensor (arrays of any layout: ones the kernel
    cannot address are copied to scratch and copied back)."""
    dtype = param.dtype.newbyteorder("=")
    work = []
    for a in (param, *states):
        if a is None:
            work.append(None)
        elif _is_kernel_ready(a):
            work.append(a)
        else:
            work.append(np.ascontiguousarray(a, dtype))
    slots = 2 + len(SLOTS[algorithm])
    ptrs = np.zeros((1, slots), np.int64)
    ptrs[0, 0] = address(work[0])
    ptrs[0, 1] = address(grad)
    for j, a in enumerate(work[1:]):
        if a is not None:
            ptrs[0, 2 + j] = address(a)
    n = param.size
    multi_step(algorithm, dtype, ptrs, chunk_table([n]), np.array([coef], np.float64), n)
    for a, w in zip((param, *states), work):
        if a is not None and w is not a:
            a[...] = w
    return param


def _device_call(name, param, *args, **kwargs):
    return device_function(__name__, name)(param, *args, **kwargs)


def sgd_(param, grad, momentum_buffer=None, *, lr, momentum=0.0, dampening=0.0,
         weight_decay=0.0, nesterov=False, maximize=False, first_step=False):
    """One SGD step in place (``torch.optim.SGD``): returns ``param``.

    torch's form (g the gradient, negated when ``maximize``; b the momentum buffer)::

        g = g + weight_decay * p
        b = g                                   (first step: ``first_step=True``)
        b = momentum * b + (1 - dampening) * g  (later steps)
        g = g + momentum * b  (nesterov)   or   g = b
        p = p - lr * g

    The seed keeps lr inside the buffer: m = momentum * m + lr * g, p = p - m (the same
    steps as torch's for a constant lr), and its NAG takes the gradient at the look-ahead
    point: m = momentum * m + lr * grad(p - momentum * m), p = p - m. torch's nesterov form
    above is that method rewritten with the gradient at p (Sutskever et al.), and is the rule
    here.
    ``momentum_buffer`` (param's shape and dtype) is needed when momentum != 0.

    Examples
    --------
    >>> import numpy as np; from fastnorm.optim import functional as F
    >>> p = np.ones(3, np.float32); buf = np.zeros(3, np.float32)
    >>> F.sgd_(p, np.full(3, 0.5, np.float32), buf, lr=0.1, momentum=0.9, first_step=True)
    array([0.95, 0.95, 0.95], dtype=float32)
    """
    if on_device(param):
        return _device_call("sgd_", param, grad, momentum_buffer, lr=lr, momentum=momentum,
                            dampening=dampening, weight_decay=weight_decay, nesterov=nesterov,
                            maximize=maximize, first_step=first_step)
    param = _inplace(param, "param", None)
    g = _grad(grad, param)
    if momentum != 0:
        if momentum_buffer is None:
            raise ValueError("momentum_buffer is required when momentum != 0")
        _inplace(momentum_buffer, "momentum_buffer", param)
    else:
        momentum_buffer = None
    coef = sgd_coef(lr, momentum, dampening, weight_decay, nesterov, maximize, first_step)
    return _run_one("sgd", param, g, (momentum_buffer,), coef)


def adagrad_(param, grad, state_sum, step, *, lr=1e-2, lr_decay=0.0, weight_decay=0.0,
             eps=1e-10, maximize=False):
    """One Adagrad step in place (``torch.optim.Adagrad``): returns ``param``.

    torch's form, ``step`` the step count after this update::

        g = g + weight_decay * p
        clr = lr / (1 + (step - 1) * lr_decay)
        sum = sum + g * g
        p = p - clr * g / (sqrt(sum) + eps)

    The seed writes r = r + g^2, p = p - lr / sqrt(r + eps) * g^2 (the g^2 of its last line
    is a typo for g; eps inside the root, no lr decay); torch's placement, eps outside the
    root, is the rule here.

    Examples
    --------
    >>> import numpy as np; from fastnorm.optim import functional as F
    >>> p = np.ones(2); s = np.zeros(2)
    >>> F.adagrad_(p, np.array([2.0, -1.0]), s, 1, lr=0.5)
    array([0.5, 1.5])
    """
    if on_device(param):
        return _device_call("adagrad_", param, grad, state_sum, step, lr=lr, lr_decay=lr_decay,
                            weight_decay=weight_decay, eps=eps, maximize=maximize)
    param = _inplace(param, "param", None)
    g = _grad(grad, param)
    _inplace(state_sum, "state_sum", param)
    coef = adagrad_coef(lr, lr_decay, weight_decay, eps, maximize, check_step(step))
    return _run_one("adagrad", param, g, (state_sum,), coef)


def adadelta_(param, grad, square_avg, acc_delta, *, lr=1.0, rho=0.9, eps=1e-6,
              weight_decay=0.0, maximize=False):
    """One Adadelta step in place (``torch.optim.Adadelta``): returns ``param``.

    torch's form::

        g = g + weight_decay * p
        square_avg = rho * square_avg + (1 - rho) * g * g
        delta = sqrt(acc_delta + eps) / sqrt(square_avg + eps) * g
        acc_delta = rho * acc_delta + (1 - rho) * delta * delta
        p = p - lr * delta

    Zeiler's Adadelta (the seed) has no learning rate: p = p - delta, i.e. lr = 1 (torch's
    default); torch scales delta by lr, which is the rule here.

    Examples
    --------
    >>> import numpy as np; from fastnorm.optim import functional as F
    >>> p = np.zeros(1); F.adadelta_(p, np.ones(1), np.zeros(1), np.zeros(1)).round(6)
    array([-0.003162])
    """
    if on_device(param):
        return _device_call("adadelta_", param, grad, square_avg, acc_delta, lr=lr, rho=rho,
                            eps=eps, weight_decay=weight_decay, maximize=maximize)
    param = _inplace(param, "param", None)
    g = _grad(grad, param)
    _inplace(square_avg, "square_avg", param)
    _inplace(acc_delta, "acc_delta", param)
    coef = adadelta_coef(lr, rho, eps, weight_decay, maximize)
    return _run_one("adadelta", param, g, (square_avg, acc_delta), coef)


def rmsprop_(param, grad, square_avg, *, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0,
             momentum=0.0, centered=False, maximize=False, grad_avg=None, momentum_buffer=None):
    """One RMSprop step in place (``torch.optim.RMSprop``): returns ``param``.

    torch's form::

        g = g + weight_decay * p
        square_avg = alpha * square_avg + (1 - alpha) * g * g
        grad_avg = lerp(grad_avg, g, 1 - alpha)                       (centered)
        avg = sqrt(square_avg - grad_avg^2) + eps  (centered)  or  sqrt(square_avg) + eps
        buf = momentum * buf + g / avg;  p = p - lr * buf               (momentum > 0)
        p = p - lr * g / avg                                            (otherwise)

    The seed's RMSprop puts eps inside the root (g / sqrt(square_avg + eps)); torch adds it
    after the root, the rule here. ``grad_avg`` is needed when centered, ``momentum_buffer``
    when momentum > 0.

    Examples
    --------
    >>> import numpy as np; from fastnorm.optim import functional as F
    >>> p = np.zeros(1); F.rmsprop_(p, np.ones(1), np.zeros(1), lr=0.01).round(6)
    array([-0.1])
    """
    if on_device(param):
        return _device_call("rmsprop_", param, grad, square_avg, lr=lr, alpha=alpha, eps=eps,
                            weight_decay=weight_decay, momentum=momentum, centered=centered,
                            maximize=maximize, grad_avg=grad_avg, momentum_buffer=momentum_buffer)
    param = _inplace(param, "param", None)
    g = _grad(grad, param)
    _inplace(square_avg, "square_avg", param)
    if centered:
        if grad_avg is None:
            raise ValueError("grad_avg is required when centered=True")
        _inplace(grad_avg, "grad_avg", param)
    else:
        grad_avg = None
    if momentum > 0:
        if momentum_buffer is None:
            raise ValueError("momentum_buffer is required when momentum > 0")
        _inplace(momentum_buffer, "momentum_buffer", param)
    else:
        momentum_buffer = None
    coef = rmsprop_coef(lr, alpha, eps, weight_decay, momentum, centered, maximize)
    return _run_one("rmsprop", param, g, (square_avg, grad_avg, momentum_buffer), coef)


def adam_(param, grad, exp_avg, exp_avg_sq, step, *, lr, beta1, beta2, eps, weight_decay=0.0,
          decoupled=False, max_exp_avg_sq=None, maximize=False):
    """One Adam (``decoupled=False``) or AdamW (``decoupled=True``) step in place
    (``torch.optim.Adam`` / ``AdamW``; AMSGrad when ``max_exp_avg_sq`` is given): returns
    ``param``. ``step`` is the step count after this update.

    torch's form::

        p = p * (1 - lr * weight_decay)            (decoupled, AdamW)
        g = g + weight_decay * p                   (otherwise, Adam's L2 penalty)
        m = lerp(m, g, 1 - beta1)                  i.e. beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        vmax = max(vmax, v); v' = vmax  (amsgrad)   or   v' = v
        p = p - lr / (1 - beta1^step) * m / (sqrt(v') / sqrt(1 - beta2^step) + eps)

    The seed writes the bias-corrected moments m^ = m / (1 - beta1^t), v^ = v / (1 - beta2^t)
    and p = p - lr * m^ / (sqrt(v^) + eps): the same update except for where eps sits (torch's
    eps is added to sqrt(v) / sqrt(1 - beta2^t), i.e. eps is not bias-corrected); torch's
    order is the rule here.

    Examples
    --------
    >>> import numpy as np; from fastnorm.optim import functional as F
    >>> p = np.zeros(2); m = np.zeros(2); v = np.zeros(2)
    >>> F.adam_(p, np.array([1.0, -2.0]), m, v, 1, lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8)
    array([-0.1,  0.1])
    """
    if on_device(param):
        return _device_call("adam_", param, grad, exp_avg, exp_avg_sq, step, lr=lr, beta1=beta1,
                            beta2=beta2, eps=eps, weight_decay=weight_decay, decoupled=decoupled,
                            max_exp_avg_sq=max_exp_avg_sq, maximize=maximize)
    param = _inplace(param, "param", None)
    g = _grad(grad, param)
    _inplace(exp_avg, "exp_avg", param)
    _inplace(exp_avg_sq, "exp_avg_sq", param)
    amsgrad = max_exp_avg_sq is not None
    if amsgrad:
        _inplace(max_exp_avg_sq, "max_exp_avg_sq", param)
    coef = adam_coef(lr, beta1, beta2, eps, weight_decay, decoupled, amsgrad, maximize,
                     check_step(step))
    return _run_one("adam", param, g, (exp_avg, exp_avg_sq, max_exp_avg_sq), coef)
