"""The base of fastnorm's layers (see fastnorm.nn).

Each layer: ``y = layer(x)``; ``dx = layer.backward(dy)`` (uses what the last forward in
training mode cached and fills ``layer.grads``, same keys as ``layer.params``). The cache holds
a reference to the forward's input, as torch's autograd does: modify that array before
``backward`` and the gradient is of the modified values; ``.train()``,
``.eval()``, ``.training``; ``.params`` (name -> array, updated in place by optimizers);
``state_dict()`` / ``load_state_dict(d)`` with PyTorch's key names, so
``{k: t.numpy() for k, t in torch_module.state_dict().items()}`` loads as-is.
"""
import numpy as np

from .._validation import FLOAT_DTYPES

__all__ = ["Module"]


class Module:
    """Base of fastnorm's layers: parameters, buffers, train/eval and state_dicts."""

    def __init__(self, dtype=np.float32):
        dtype = np.dtype(dtype)
        if dtype not in FLOAT_DTYPES:
            raise TypeError(f"dtype must be float32 or float64, got {dtype}")
        self.dtype = dtype
        self.params = {}   # learnable: name -> array (updated in place by optimizers)
        self.buffers = {}  # state that is not learned (running statistics, counters)
        self.grads = {}
        self.training = True
        self._cache = None  # what the last forward keeps for backward

    def __call__(self, x):
        return self.forward(x)

    def forward(self, x):
        raise NotImplementedError

    def backward(self, dy):
        raise NotImplementedError

    def train(self, mode=True):
        self.training = bool(mode)
        return self

    def eval(self):
        return self.train(False)

    def _check_input(self, x):
        x = np.asarray(x)
        if x.dtype != self.dtype:
            raise TypeError(f"{type(self).__name__} holds {self.dtype} parameters; input has dtype {x.dtype}")
        return x

    def _cached(self):
        if self._cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward needs a forward call in training mode first")
        return self._cache

    def state_dict(self):
        """Copies of params and buffers under PyTorch's key names."""
        return {k: np.array(a, copy=True) for k, a in {**self.params, **self.buffers}.items()}

    def load_state_dict(self, state_dict, strict=True):
        """Copy values into the existing arrays (optimizers holding them see the change).

        Every key is checked before anything is written: missing or unexpected keys (with
        ``strict``), wrong shapes and non-float values raise and leave the layer unchanged.
        """
        own = {**self.params, **self.buffers}
        given = dict(state_dict)
        missing = [k for k in own if k not in given]
        unexpected = [k for k in given if k not in own]
        if strict and (missing or unexpected):
            raise KeyError(f"{type(self).__name__}.load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
        staged = {}
        for k, dst in own.items():
            if k not in given:
                continue
            src = np.asarray(given[k])
            if src.shape != dst.shape:
                raise ValueError(f"{k}: expected shape {dst.shape}, got {src.shape}")
            if dst.dtype.kind == "f" and src.dtype.kind not in "fiu":
                raise TypeError(f"{k}: expected a float array, got dtype {src.dtype}")
            staged[k] = src
        for k, src in staged.items():
            own[k][...] = src
        return self
