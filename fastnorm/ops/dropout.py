"""Dropout without a stored mask: the mask is a pure function of (seed, element index).

Inverted dropout keeps each element with probability 1 - p and scales the kept ones by
1 / (1 - p), so that E[y] = x in training and the layer is the identity at evaluation, with
no rescaling there. The keep test of element i is ``bits_i >= floor(p * 2^32)`` on the 32-bit
word i of the Philox4x32-10 stream keyed by the seed (``fastnorm.random``); the backward
regenerates the same words from the seed, so nothing is kept between forward and backward
(PyTorch keeps a byte per element). The same seed gives the same mask on both CPU backends,
any thread count and the numba.cuda kernels.
"""
import math

import numpy as np

from .. import _validation as v
from .. import random as _random
from .._dispatch import device_variant, kernels, threads_for

__all__ = ["dropout", "dropout_backward", "dropout_mask", "gaussian_dropout",
           "gaussian_dropout_backward"]


def check_p(p, name="p", allow_one=True):
    """``p`` as a float in [0, 1] ([0, 1) without ``allow_one``); ValueError otherwise."""
    if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number in [0, 1], got {type(p).__name__}")
    p = float(p)
    if not (0.0 <= p <= 1.0) or (p == 1.0 and not allow_one):
        raise ValueError(f"{name} must be in [0, 1{']' if allow_one else ')'}, got {p}")
    return p


def threshold(p):
    """The keep test's threshold: element i is kept when its 32 random bits are >= floor(p 2^32)
    (exact: p * 2^32 is a power-of-two scaling), so P(keep) = 1 - p within 2^-32."""
    return int(math.floor(p * 4294967296.0))


def _flat_io(x, out, name):
    """(x, flat C-contiguous x, out, flat kernel target)."""
    x = v.float_array(x, name)
    out = v.out_array(out, x.shape, x.dtype)
    target = v.kernel_target(out, x)
    return x, v.contiguous(x).reshape(-1), out, target


def _apply(x, p, seed, out, name):
    x, xf, out, target = _flat_io(x, out, name)
    tf = target.reshape(-1)
    n = xf.size
    if p == 1.0:
        with np.errstate(invalid="ignore"):
            np.multiply(xf, x.dtype.type(0), out=tf)  # torch: x * 0 (NaN stays NaN, inf gives NaN)
    elif n:
        kernels("dropout").dropout_apply(xf, tf, 0, *_random.key(seed), threshold(p),
                                         x.dtype.type(1.0 / (1.0 - p)), threads_for(n))
    return v.finish(out, target)


def _forward(apply, x, p, training, seed, out, return_seed, identity=None):
    """dropout's and gaussian_dropout's forward: ``apply(x, p, seed, out, "x")`` in training
    with p > 0 (the seed drawn when None), else x itself (``identity(x, out, "x")``, copied
    into out); y, or (y, seed). fastnorm.cuda.dropout passes its device ``apply``/``identity``."""
    if not training or p == 0.0:
        y = (identity or _identity)(x, out, "x")
        return (y, None if seed is None else _random.check_seed(seed)) if return_seed else y
    seed = _random.check_seed(seed)
    y = apply(x, p, seed, out, "x")
    return (y, seed) if return_seed else y


def _backward(apply, op, dy, p, seed, training, out, identity=None):
    """dropout's and gaussian_dropout's backward: the forward's noise regenerated from
    ``seed`` (required), ``apply(dy, p, seed, out, "dy")``; dy itself when not training."""
    if seed is None:
        raise TypeError(f"{op} needs the forward's seed (an int), got None")
    seed = _random.check_seed(seed)
    if not training or p == 0.0:
        return (identity or _identity)(dy, out, "dy")
    return apply(dy, p, seed, out, "dy")


def _identity(x, out, name):
    x = v.float_array(x, name)
    if out is None:
        return x
    out = v.out_array(out, x.shape, x.dtype)
    out[...] = x
    return out


@device_variant
def dropout(x, p=0.5, *, training=True, seed=None, out=None, return_seed=False):
    """Inverted dropout: ``y_i = x_i * m_i / (1 - p)``, ``m_i = [bits_i >= floor(p 2^32)]``.

    ``torch.nn.functional.dropout(x, p, training)`` (the scale 1/(1-p) is rounded to x's dtype
    and multiplies the kept elements; dropped ones are ``x * 0``, so NaN/inf stay NaN as in
    torch). ``training=False`` or ``p=0`` returns x unchanged (x itself when ``out`` is None,
    as torch does); ``p=1`` gives zeros. The mask comes from the counter-based generator keyed
    by ``seed`` (an int in [0, 2^64); None draws ``fastnorm.random.next_seed()``): element i
    of x in C order is kept or dropped by the same bits on every backend, thread count and
    device, and ``dropout_backward(dy, p, seed)`` regenerates it. ``return_seed=True`` returns
    ``(y, seed)`` (the seed the backward needs when it was drawn here).

    >>> import numpy as np, fastnorm.functional as fn
    >>> y = fn.dropout(np.ones(8, np.float32), 0.5, seed=0); y
    array([0., 2., 0., 2., 2., 0., 2., 2.], dtype=float32)
    >>> fn.dropout_backward(np.ones(8, np.float32), 0.5, seed=0)
    array([0., 2., 0., 2., 2., 0., 2., 2.], dtype=float32)
    """
    return _forward(_apply, x, check_p(p), training, seed, out, return_seed)


@device_variant
def dropout_backward(dy, p, seed, *, training=True, out=None):
    """Gradient of ``dropout``: ``dx_i = dy_i * m_i / (1 - p)`` with the forward's mask,
    regenerated from ``seed`` (nothing was stored). ``training=False`` (or p = 0) passes dy
    through. ``out`` may be ``dy`` (in place).

    >>> import numpy as np, fastnorm.functional as fn
    >>> x = np.arange(1.0, 7.0); y = fn.dropout(x, 0.25, seed=42)
    >>> dx = fn.dropout_backward(np.ones(6), 0.25, seed=42)
    >>> bool(((dx != 0) == (y != 0)).all()), float(dx.max())
    (True, 1.3333333333333333)
    """
    return _backward(_apply, "dropout_backward", dy, check_p(p), seed, training, out)


def dropout_mask(shape, p, seed):
    """The keep mask ``dropout(x, p, seed=seed)`` applies to an x of ``shape``: a bool array,
    True where the element is kept (``bits_i >= floor(p 2^32)``), for inspection.

    >>> import fastnorm.functional as fn
    >>> fn.dropout_mask((2, 4), 0.5, seed=0)
    array([[False,  True, False,  True],
           [ True, False,  True,  True]])
    """
    p = check_p(p)
    seed = _random.check_seed(seed, "seed")
    shape = _random._shape(shape)
    n = math.prod(shape)
    out = np.empty(n, np.bool_)
    if p == 1.0:
        out.fill(False)
    elif n:
        kernels("dropout").dropout_mask(out.view(np.uint8), 0, *_random.key(seed), threshold(p),
                                        threads_for(n))
    return out.reshape(shape)


def _gaussian(x, p, seed, out, name):
    x, xf, out, target = _flat_io(x, out, name)
    tf = target.reshape(-1)
    n = xf.size
    if n:
        kernels("dropout").normal_apply(xf, tf, 0, *_random.key(seed), 1.0,
                                        math.sqrt(p / (1.0 - p)), 1, threads_for(2 * n))
    return v.finish(out, target)


@device_variant
def gaussian_dropout(x, p=0.5, *, training=True, seed=None, out=None, return_seed=False):
    """Multiplicative Gaussian noise: ``y_i = x_i * (1 + sqrt(p / (1 - p)) * z_i)``, z_i
    standard normal, i.e. noise N(1, p/(1-p)): the mean and variance of inverted dropout's
    factor m/(1-p) (Srivastava et al. 2014, section 10; ``keras.layers.GaussianDropout(rate)``;
    torch has no such op). Identity when not training or p = 0; p must be in [0, 1). The noise
    is computed in float64 and the product rounded once; z_i is a pure function of (seed, i)
    (``fastnorm.random.normal``), regenerated by ``gaussian_dropout_backward``.

    >>> import numpy as np, fastnorm.functional as fn
    >>> y = fn.gaussian_dropout(np.ones(100000), 0.5, seed=1)
    >>> round(float(y.mean()), 2), round(float(y.var()), 1)
    (1.0, 1.0)
    """
    return _forward(_gaussian, x, check_p(p, allow_one=False), training, seed, out, return_seed)


@device_variant
def gaussian_dropout_backward(dy, p, seed, *, training=True, out=None):
    """Gradient of ``gaussian_dropout``: ``dx_i = dy_i * (1 + sqrt(p/(1-p)) z_i)``, the noise
    regenerated from ``seed``.

    >>> import numpy as np, fastnorm.functional as fn
    >>> x = np.arange(4.0); y = fn.gaussian_dropout(x, 0.3, seed=5)
    >>> bool(np.array_equal(fn.gaussian_dropout_backward(x, 0.3, seed=5), y))
    True
    """
    return _backward(_gaussian, "gaussian_dropout_backward", dy, check_p(p, allow_one=False), seed, training, out)
