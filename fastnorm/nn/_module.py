"""The base of fastnorm's layers (see fastnorm.nn).

Each layer: ``y = layer(x)``; ``dx = layer.backward(dy)`` (uses what the last forward in
training mode cached and fills ``layer.grads``, same keys as ``layer.params``). The cache holds
a reference to the forward's input, as torch's autograd does: modify that array before
``backward`` and the gradient is of the modified values; ``.train()``,
``.eval()``, ``.training``; ``.params`` (name -> array, updated in place by optimizers);
``state_dict()`` / ``load_state_dict(d)`` with PyTorch's key names, so
``{k: t.numpy() for k, t in torch_module.state_dict().items()}`` loads as-is.

CUDA: a layer called with a device array runs the numba.cuda kernels of its functional op and
returns device arrays (grads too); ``to_device()`` moves its float params and buffers to the
device (then host input is refused: TypeError, never a silent copy). ``state_dict()`` always
returns host copies (for saving); ``load_state_dict`` copies values into device arrays in place.
"""
import numpy as np

from .._dispatch import on_device
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

    def to_device(self):
        """Move the float params and buffers to the CUDA device (numba device arrays, copied
        once; integer counters such as num_batches_tracked stay on the host); returns self.
        Optimizers must be built after this (they hold the arrays)."""
        from numba import cuda

        for d in (self.params, self.buffers):
            for k, a in d.items():
                if not on_device(a) and a.dtype.kind == "f":
                    d[k] = cuda.to_device(np.ascontiguousarray(a))
        return self

    def _holds_device(self):
        return any(on_device(a) for a in (*self.params.values(), *self.buffers.values()))

    def _check_input(self, x):
        if on_device(x):
            if np.dtype(x.dtype) != self.dtype:
                raise TypeError(f"{type(self).__name__} holds {self.dtype} parameters; input has dtype {x.dtype}")
            return x
        if self._holds_device():
            raise TypeError(f"{type(self).__name__} holds device params (to_device()); input must be "
                            f"a device array, got {type(x).__name__}")
        x = np.asarray(x)
        if x.dtype != self.dtype:
            raise TypeError(f"{type(self).__name__} holds {self.dtype} parameters; input has dtype {x.dtype}")
        return x

    def _cached(self):
        if self._cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward needs a forward call in training mode first")
        return self._cache

    def state_dict(self):
        """Copies of params and buffers under PyTorch's key names (host copies of device ones)."""
        return {k: a.copy_to_host() if on_device(a) else np.array(a, copy=True)
                for k, a in {**self.params, **self.buffers}.items()}

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
            src = given[k]
            src = src.copy_to_host() if on_device(src) else np.asarray(src)
            if src.shape != tuple(dst.shape):
                raise ValueError(f"{k}: expected shape {dst.shape}, got {src.shape}")
            if np.dtype(dst.dtype).kind == "f" and src.dtype.kind not in "fiu":
                raise TypeError(f"{k}: expected a float array, got dtype {src.dtype}")
            staged[k] = src
        for k, src in staged.items():
            if on_device(own[k]):
                own[k].copy_to_device(np.ascontiguousarray(src, np.dtype(own[k].dtype)))
            else:
                own[k][...] = src
        return self
