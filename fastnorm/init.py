"""Weight initialization: Xavier/Glorot and Kaiming/He, uniform and normal, seeded.

``torch.nn.init``'s functions, names and semantics on NumPy arrays or C-contiguous CUDA device
arrays (filled in place, on the device for the latter, and returned), drawing from fastnorm's counter-based generator (``fastnorm.random``): the same
``seed`` gives the same weights on every backend and thread count (``seed=None`` draws
``fastnorm.random.next_seed()``). Fans as torch computes them for a weight of shape
(out, in, *kernel): fan_in = in * prod(kernel), fan_out = out * prod(kernel).

- Xavier (Glorot & Bengio 2010): Var(w) = gain^2 * 2 / (fan_in + fan_out);
  uniform on [-a, a], a = gain * sqrt(6 / (fan_in + fan_out)), or normal with std
  gain * sqrt(2 / (fan_in + fan_out)).
- Kaiming (He et al. 2015): Var(w) = gain^2 / fan (fan_in keeps the forward's variance,
  fan_out the backward's); uniform bound gain * sqrt(3 / fan), normal std gain / sqrt(fan),
  gain = calculate_gain(nonlinearity, a).

>>> import numpy as np, fastnorm.init as init
>>> w = init.kaiming_uniform_(np.empty((256, 128), np.float32), nonlinearity="relu", seed=0)
>>> bool(np.abs(w).max() <= np.sqrt(6 / 128))
True
"""
import math

import numpy as np

from . import _validation as v
from . import random as _random
from ._dispatch import on_device

__all__ = ["calculate_gain", "calculate_fan_in_and_fan_out", "uniform_", "normal_",
           "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_"]


def calculate_gain(nonlinearity, param=None):
    """The recommended gain for a nonlinearity, as ``torch.nn.init.calculate_gain``:
    1 for linear/conv/sigmoid, 5/3 for tanh, sqrt(2) for relu, sqrt(2 / (1 + slope^2)) for
    leaky_relu (slope ``param``, default 0.01), 3/4 for selu.

    >>> from fastnorm.init import calculate_gain
    >>> calculate_gain("relu"), calculate_gain("leaky_relu", 0.2)
    (1.4142135623730951, 1.3867504905630728)
    """
    linear = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
              "conv_transpose3d")
    if nonlinearity in linear or nonlinearity == "sigmoid":
        return 1
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif not isinstance(param, bool) and isinstance(param, (int, float, np.integer, np.floating)):
            slope = param
        else:
            raise ValueError(f"negative_slope {param} not a valid number")
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"Unsupported nonlinearity {nonlinearity}")


def calculate_fan_in_and_fan_out(shape):
    """(fan_in, fan_out) of a weight of ``shape`` (or an array): (shape[1], shape[0]) times the
    receptive field prod(shape[2:]); ValueError below 2 dimensions (as torch)."""
    shape = tuple(getattr(shape, "shape", shape))
    if len(shape) < 2:
        raise ValueError("Fan in and fan out can not be computed for tensor with fewer than 2 dimensions")
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def _fan(shape, mode):
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"Mode {mode} not supported, please use one of fan_in, fan_out")
    fan_in, fan_out = calculate_fan_in_and_fan_out(shape)
    return fan_in if mode == "fan_in" else fan_out


def _writable(tensor):
    if on_device(tensor):  # filled on the device (fastnorm.random's device path checks it)
        return tensor
    if type(tensor) is not np.ndarray:
        raise TypeError(f"tensor must be a numpy.ndarray (filled in place), got {type(tensor).__name__}")
    v.float_array(tensor, "tensor")
    if not tensor.flags.writeable:
        raise ValueError("tensor is read-only")
    return tensor


def _fill(tensor, draw):
    """Fill ``tensor`` with ``draw(shape, dtype, out)``, through a scratch array when it is not
    C-contiguous and native; returns it."""
    if on_device(tensor):
        draw(tuple(tensor.shape), np.dtype(tensor.dtype), tensor)
        return tensor
    dt = tensor.dtype.newbyteorder("=")
    if tensor.flags.c_contiguous and tensor.dtype.isnative:
        draw(tensor.shape, dt, tensor)
    else:
        tensor[...] = draw(tensor.shape, dt, None)
    return tensor


def uniform_(tensor, a=0.0, b=1.0, *, seed=None):
    """Fill ``tensor`` with U(a, b) in place (``torch.nn.init.uniform_``); returns it.

    >>> import numpy as np, fastnorm.init as init
    >>> w = init.uniform_(np.empty(1000), -2.0, 2.0, seed=1); bool(w.min() >= -2 and w.max() < 2)
    True
    """
    tensor = _writable(tensor)
    seed = _random.check_seed(seed)
    return _fill(tensor, lambda s, dt, out: _random.uniform(s, a, b, seed=seed, dtype=dt, out=out))


def normal_(tensor, mean=0.0, std=1.0, *, seed=None):
    """Fill ``tensor`` with N(mean, std^2) in place (``torch.nn.init.normal_``); returns it."""
    tensor = _writable(tensor)
    seed = _random.check_seed(seed)
    return _fill(tensor, lambda s, dt, out: _random.normal(s, mean, std, seed=seed, dtype=dt, out=out))


def xavier_uniform_(tensor, gain=1.0, *, seed=None):
    """Glorot uniform: U(-a, a), a = gain * sqrt(6 / (fan_in + fan_out))
    (``torch.nn.init.xavier_uniform_``)."""
    fan_in, fan_out = calculate_fan_in_and_fan_out(_writable(tensor).shape)
    a = math.sqrt(3.0) * gain * math.sqrt(2.0 / float(fan_in + fan_out))
    return uniform_(tensor, -a, a, seed=seed)


def xavier_normal_(tensor, gain=1.0, *, seed=None):
    """Glorot normal: N(0, std^2), std = gain * sqrt(2 / (fan_in + fan_out))
    (``torch.nn.init.xavier_normal_``)."""
    fan_in, fan_out = calculate_fan_in_and_fan_out(_writable(tensor).shape)
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / float(fan_in + fan_out)), seed=seed)


def kaiming_uniform_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu", *, seed=None):
    """He uniform: U(-bound, bound), bound = gain * sqrt(3 / fan), gain =
    calculate_gain(nonlinearity, a) (``torch.nn.init.kaiming_uniform_``; a zero-size tensor is
    left alone, as torch does)."""
    tensor = _writable(tensor)
    if 0 in tensor.shape:
        return tensor
    std = calculate_gain(nonlinearity, a) / math.sqrt(_fan(tensor.shape, mode))
    bound = math.sqrt(3.0) * std
    return uniform_(tensor, -bound, bound, seed=seed)


def kaiming_normal_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu", *, seed=None):
    """He normal: N(0, std^2), std = gain / sqrt(fan) (``torch.nn.init.kaiming_normal_``)."""
    tensor = _writable(tensor)
    if 0 in tensor.shape:
        return tensor
    std = calculate_gain(nonlinearity, a) / math.sqrt(_fan(tensor.shape, mode))
    return normal_(tensor, 0.0, std, seed=seed)
