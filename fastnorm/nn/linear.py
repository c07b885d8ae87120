"""A fully connected layer: Linear (torch.nn.Linear's params, init and state_dict)."""
import math

import numpy as np

from .. import init as _init, random as _random
from .._dispatch import no_device_kernel, on_device
from ._module import Module

__all__ = ["Linear"]


class Linear(Module):
    """``torch.nn.Linear(in_features, out_features, bias)``: ``y = x @ weight.T + bias`` over
    the last axis of x (``(*, in_features) -> (*, out_features)``).

    Params ``weight`` (out_features, in_features) and ``bias`` (out_features,), initialized as
    torch does: U(-1/sqrt(in_features), 1/sqrt(in_features)) for both (``seed`` makes it
    reproducible, from fastnorm's counter-based generator). ``backward(dy)`` returns
    ``dx = dy @ weight`` and fills ``grads``::

        dweight = dy^T x,   dbias = sum dy      (over every axis but the last)

    NumPy's matmul (BLAS) does the products: this layer is plumbing for models built from
    fastnorm's kernels, not a kernel of its own, and it has no CUDA path (device inputs or
    params raise NotImplementedError).

    >>> import numpy as np; from fastnorm import nn
    >>> fc = nn.Linear(3, 2, seed=0)
    >>> _ = fc.load_state_dict({"weight": np.array([[1, 0, 1], [0, 2, 0]], np.float32),
    ...                         "bias": np.array([0.5, -1], np.float32)})
    >>> y = fc(np.array([[1.0, 2.0, 3.0]], np.float32)); y
    array([[4.5, 3. ]], dtype=float32)
    >>> fc.backward(np.ones_like(y)), fc.grads["bias"]
    (array([[1., 2., 1.]], dtype=float32), array([1., 1.], dtype=float32))
    """

    def __init__(self, in_features, out_features, bias=True, dtype=np.float32, *, seed=None):
        super().__init__(dtype)
        self.in_features, self.out_features = int(in_features), int(out_features)
        if self.in_features < 0 or self.out_features < 0:
            raise ValueError(f"Linear({in_features}, {out_features}): sizes must be non-negative")
        bound = 1.0 / math.sqrt(self.in_features) if self.in_features else 0.0
        seeds = (None, None) if seed is None else (seed, (_random.check_seed(seed) + 1) % (1 << 64))
        self.params["weight"] = _init.uniform_(
            np.empty((self.out_features, self.in_features), self.dtype), -bound, bound, seed=seeds[0])
        if bias:
            self.params["bias"] = _init.uniform_(np.empty(self.out_features, self.dtype),
                                                 -bound, bound, seed=seeds[1])

    def forward(self, x):
        if on_device(x) or self._holds_device():
            raise no_device_kernel("nn.Linear", "its products run in NumPy's BLAS on the host")
        x = self._check_input(x)
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"Linear({self.in_features}, {self.out_features}): input of shape "
                             f"{x.shape} must end with {self.in_features} features")
        y = x @ self.params["weight"].T
        if "bias" in self.params:
            y += self.params["bias"]
        self._cache = x if self.training else None
        return y

    def backward(self, dy):
        x = self._cached()
        dy = self._check_input(dy)
        if dy.shape != x.shape[:-1] + (self.out_features,):
            raise ValueError(f"Linear.backward: dy of shape {dy.shape} does not match the output "
                             f"shape {x.shape[:-1] + (self.out_features,)}")
        dy2 = dy.reshape(-1, self.out_features)
        self.grads = {"weight": dy2.T @ x.reshape(-1, self.in_features)}
        if "bias" in self.params:
            self.grads["bias"] = dy2.sum(axis=0)
        return dy @ self.params["weight"]

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={'bias' in self.params}"
