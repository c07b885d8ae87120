"""Dropout layers: Dropout and GaussianDropout. They keep a seed, never a mask."""
import numpy as np

from ..ops import dropout as F
from .. import random as _random
from ._module import Module

__all__ = ["Dropout", "GaussianDropout"]


class _SeededNoise(Module):
    _forward = _backward = None
    _allow_one = True

    def __init__(self, p=0.5, inplace=False, dtype=np.float32, seed=None):
        super().__init__(dtype)
        self.p = F.check_p(p, allow_one=self._allow_one)
        self.inplace = bool(inplace)
        self._seeds = None if seed is None else _SeedSequence(_random.check_seed(seed))
        self.seed = None  # the last training forward's seed: all the backward needs

    def _next_seed(self):
        return _random.next_seed() if self._seeds is None else self._seeds.next()

    def forward(self, x):
        x = self._check_input(x)
        if not self.training or self.p == 0.0:
            self._cache = (False,)
            return x
        self.seed = self._next_seed()
        self._cache = (True,)
        return type(self)._forward(x, self.p, seed=self.seed, out=x if self.inplace else None)

    def backward(self, dy):
        (active,) = self._cached()
        self.grads = {}
        if not active:
            return dy
        return type(self)._backward(dy, self.p, self.seed)

    def extra_repr(self):
        return f"p={self.p}, inplace={self.inplace}"


class _SeedSequence:
    """Per-layer seeds: the layer's own reproducible sequence (``seed=`` given)."""

    def __init__(self, seed):
        self.key = _random.key(seed)
        self.count = 0

    def next(self):
        w = _random.philox4x32_10((self.count & 0xFFFFFFFF, self.count >> 32, 3, 0), self.key)
        self.count += 1
        return w[0] | (w[1] << 32)


class Dropout(_SeededNoise):
    """Inverted dropout (``torch.nn.Dropout(p, inplace)``): in training each forward draws a
    fresh seed (from ``fastnorm.random.next_seed()``, or from the layer's own sequence when
    ``seed`` is given), drops elements with probability p and scales the rest by 1/(1-p);
    ``backward`` regenerates the mask from that seed (``self.seed``): no per-element memory is
    kept. Identity in eval mode. See ``fastnorm.functional.dropout``.

    >>> import numpy as np; from fastnorm import nn
    >>> layer = nn.Dropout(0.5, seed=0)
    >>> y = layer(np.ones((2, 4), np.float32)); dx = layer.backward(np.ones((2, 4), np.float32))
    >>> bool(np.array_equal(y, dx)), sorted(set(y.ravel().tolist())) == [0.0, 2.0]
    (True, True)
    >>> layer.eval()(np.ones(3, np.float32))
    array([1., 1., 1.], dtype=float32)
    """

    _forward = staticmethod(F.dropout)
    _backward = staticmethod(F.dropout_backward)


class GaussianDropout(_SeededNoise):
    """Multiplicative Gaussian noise N(1, p/(1-p)) in training, identity in eval
    (``keras.layers.GaussianDropout(rate=p)``); p in [0, 1). Keeps the seed of the last
    forward, as ``Dropout`` does. See ``fastnorm.functional.gaussian_dropout``.

    >>> import numpy as np; from fastnorm import nn
    >>> layer = nn.GaussianDropout(0.2, dtype=np.float64, seed=3)
    >>> y = layer(np.ones(5)); bool(np.array_equal(layer.backward(np.ones(5)), y))
    True
    """

    _allow_one = False
    _forward = staticmethod(F.gaussian_dropout)
    _backward = staticmethod(F.gaussian_dropout_backward)
