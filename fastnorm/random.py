"""Seeds and counter-based random numbers: Philox4x32-10, the same bits everywhere.

Every random number fastnorm draws (dropout masks, Gaussian noise, initializers) is a pure
function of ``(seed, stream, index)``: element ``i`` of stream ``s`` under ``seed`` is a word of
Philox4x32-10 (Salmon et al., SC'11; the Random123 generator that cuRAND and JAX also use) of
a counter built from ``i`` and ``s``, keyed by the 64-bit seed (layout in
``fastnorm.kernels.numba.dropout``). So the numba and Cython backends, any thread count and the
numba.cuda kernels give the same bits, and any slice can be regenerated alone (``offset=``):
a dropout backward needs the seed, not the mask.

``seed=None`` anywhere takes ``next_seed()``: a sequence of 64-bit seeds drawn (by Philox
again, stream 2) from a base seed that is random at import, or set by ``manual_seed`` for
reproducible runs (``torch.manual_seed``'s role). A forked child continues its parent's
sequence (as torch's default generator does); call ``manual_seed`` in each child for
distinct ones.

>>> import fastnorm.random as fr
>>> fr.philox4x32_10((0, 0, 0, 0), (0, 0))     # Random123's known-answer vector
(1713891541, 3781805453, 3159862348, 2600524760)
>>> bool(fr.random_bits(6, seed=1)[3] == fr.random_bits(3, seed=1, offset=3)[0])
True
"""
import math
import os
import threading

import numpy as np

from . import _validation as v
from ._dispatch import device_function, kernels, on_device, threads_for

__all__ = ["philox4x32_10", "manual_seed", "next_seed", "initial_seed", "random_bits",
           "uniform", "normal"]

_U32 = np.dtype(np.uint32)
_MASK32 = 0xFFFFFFFF
_SEED_STREAM = 2  # the stream next_seed draws from (0: bits/uniform, 1: normals)


def philox4x32_10(counter, key):
    """Philox4x32-10 of a 4-word ``counter`` under a 2-word ``key`` (ints < 2^32): 4 ints.

    The bare block function (the one every kernel inlines), for known-answer tests against
    Random123's ``kat_vectors``.
    """
    c = [int(w) & _MASK32 for w in counter]
    k = [int(w) & _MASK32 for w in key]
    if len(c) != 4 or len(k) != 2:
        raise ValueError("philox4x32_10 takes a counter of 4 words and a key of 2")
    # the kernels' rounds (kernels/numba/dropout.py) in Python ints: seeds are drawn with this,
    # so the Cython path never imports numba (tests/test_imports.py)
    c0, c1, c2, c3 = c
    k0, k1 = k
    for _ in range(10):
        p0 = 0xD2511F53 * c0
        p1 = 0xCD9E8D57 * c2
        c0, c1, c2, c3 = (p1 >> 32) ^ c1 ^ k0, p1 & _MASK32, (p0 >> 32) ^ c3 ^ k1, p0 & _MASK32
        k0 = (k0 + 0x9E3779B9) & _MASK32
        k1 = (k1 + 0xBB67AE85) & _MASK32
    return c0, c1, c2, c3


def check_seed(seed, name="seed"):
    """``seed`` as an int in [0, 2^64); None draws ``next_seed()``."""
    if seed is None:
        return next_seed()
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"{name} must be an int (or None), got {type(seed).__name__}")
    seed = int(seed)
    if not 0 <= seed < 1 << 64:
        raise ValueError(f"{name} must be in [0, 2**64), got {seed}")
    return seed


def key(seed):
    """The Philox key (k0, k1) of a checked 64-bit seed."""
    return seed & _MASK32, seed >> 32


_lock = threading.Lock()
_state = {"base": int.from_bytes(os.urandom(8), "little"), "count": 0}


def manual_seed(seed):
    """Restart ``next_seed``'s sequence from ``seed`` (an int in [0, 2^64)): what
    ``torch.manual_seed`` is to torch's default generator."""
    seed = check_seed(seed)
    with _lock:
        _state["base"] = seed
        _state["count"] = 0


def initial_seed():
    """The base seed of ``next_seed``'s sequence (random at import unless ``manual_seed``)."""
    return _state["base"]


def next_seed():
    """The next 64-bit seed of the sequence: words 0 and 1 of Philox4x32-10 of counter
    (count mod 2^32, count >> 32, 2, 0) under the base seed. Thread-safe."""
    with _lock:
        count = _state["count"]
        _state["count"] = count + 1
        base = _state["base"]
    w = philox4x32_10((count & _MASK32, count >> 32, _SEED_STREAM, 0), key(base))
    return w[0] | (w[1] << 32)


def _shape(shape):
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (int(shape),)
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError:
        raise TypeError(f"shape must be an int or a tuple of ints, got {shape!r}") from None
    if any(s < 0 for s in shape):
        raise ValueError(f"shape must not have negative dimensions, got {shape}")
    return shape


def _offset(offset, n=0):
    if isinstance(offset, bool) or not isinstance(offset, (int, np.integer)):
        raise TypeError(f"offset must be an int, got {type(offset).__name__}")
    offset = int(offset)
    if offset < 0 or offset + n > 1 << 62:
        raise ValueError(f"offset must be in [0, 2**62 - size], got {offset}")
    return offset


def _float_dtype(dtype):
    dt = np.dtype(dtype)
    if dt not in v.FLOAT_DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    return dt


def random_bits(shape, seed=None, *, offset=0, stream=0):
    """The stream's 32-bit words ``offset .. offset + size - 1`` as a uint32 array of ``shape``
    (C order). ``stream`` 0 is what dropout masks and ``uniform`` use, 1 the normals' words.

    >>> import fastnorm.random as fr
    >>> fr.random_bits(3, seed=0).dtype
    dtype('uint32')
    """
    shape = _shape(shape)
    n = math.prod(shape)
    seed, offset = check_seed(seed), _offset(offset, n)
    if isinstance(stream, bool) or not isinstance(stream, (int, np.integer)) or not 0 <= stream < 1 << 32:
        raise ValueError(f"stream must be an int in [0, 2**32), got {stream!r}")
    out = np.empty(n, _U32)
    kernels("dropout").random_bits(out, offset, *key(seed), int(stream), threads_for(n))
    return out.reshape(shape)


def uniform(shape, low=0.0, high=1.0, *, seed=None, dtype=np.float64, offset=0, out=None):
    """Uniform numbers ``low + (high - low) * u``, ``u = bits * 2^-32`` in [0, 1) from stream 0,
    computed in float64 and rounded once to ``dtype`` (torch's ``uniform_``; a float32 result
    may round up to ``high``). ``out``: a C-contiguous array of ``shape`` and ``dtype`` to fill.

    >>> import fastnorm.random as fr
    >>> u = fr.uniform((2, 3), -1.0, 1.0, seed=7); bool((u >= -1).all() and (u < 1).all())
    True
    """
    shape = _shape(shape)
    dt = _float_dtype(dtype)
    n = math.prod(shape)
    seed, offset = check_seed(seed), _offset(offset, n)
    low, high = float(low), float(high)
    if not (math.isfinite(low) and math.isfinite(high)) or low > high:
        raise ValueError(f"uniform needs finite low <= high, got low={low}, high={high}")
    if out is not None and on_device(out):
        return _device_fill("uniform", out, dt, shape, low, high - low, seed, offset)
    y = _target(out, shape, dt)
    kernels("dropout").uniform_fill(y.reshape(n), offset, *key(seed), low, high - low, threads_for(n))
    return y


def normal(shape, mean=0.0, std=1.0, *, seed=None, dtype=np.float64, offset=0, out=None):
    """Normal numbers ``mean + std * z`` (Box-Muller on words 2i, 2i + 1 of stream 1: z_i =
    sqrt(-2 ln u1) cos(2 pi u2), u1 = (w + 1/2) 2^-32, u2 = w' 2^-32), float64, rounded once
    to ``dtype`` (torch's ``normal_``). ln and cos are fastnorm's own (fdlibm's algorithms, within
    about 1 ulp of libm's, the same bits on both CPU backends; vectorized), so |z| <= 6.77 (u1 >= 2^-33).

    >>> import fastnorm.random as fr
    >>> z = fr.normal(100000, seed=3); round(float(z.mean()), 1), round(float(z.std()), 1)
    (0.0, 1.0)
    """
    shape = _shape(shape)
    dt = _float_dtype(dtype)
    n = math.prod(shape)
    seed, offset = check_seed(seed), _offset(offset, n)
    mean, std = float(mean), float(std)
    if not (math.isfinite(mean) and math.isfinite(std)) or std < 0:
        raise ValueError(f"normal needs a finite mean and a finite std >= 0, got mean={mean}, std={std}")
    if out is not None and on_device(out):
        return _device_fill("normal", out, dt, shape, mean, std, seed, offset)
    y = _target(out, shape, dt)
    flat = y.reshape(n)
    kernels("dropout").normal_apply(flat, flat, offset, *key(seed), mean, std, 0, threads_for(2 * n))
    return y


def _device_fill(name, out, dt, shape, a, b, seed, offset):
    """A device ``out`` is filled on the device (fastnorm.cuda.dropout): the same numbers."""
    if np.dtype(out.dtype) != dt:
        raise TypeError(f"out must have dtype {dt}, got {out.dtype}")
    return device_function(__name__, name)(shape, a, b, seed, offset, out)


def _target(out, shape, dt):
    if out is None:
        return np.empty(shape, dt)
    out = v.out_array(out, shape, dt)
    if not (out.flags.c_contiguous and out.dtype.isnative):
        raise ValueError("out must be a C-contiguous native-byte-order array")
    return out
