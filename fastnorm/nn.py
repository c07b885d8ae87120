"""Stateful layers: thin wrappers around fastnorm.functional with PyTorch's names.

Each layer: ``y = layer(x)``; ``dx = layer.backward(dy)`` (uses what the last forward in
training mode cached and fills ``layer.grads``, same keys as ``layer.params``). The cache holds
a reference to the forward's input, as torch's autograd does: modify that array before
``backward`` and the gradient is of the modified values; ``.train()``,
``.eval()``, ``.training``; ``.params`` (name -> array, updated in place by optimizers);
``state_dict()`` / ``load_state_dict(d)`` with PyTorch's key names, so
``{k: t.numpy() for k, t in torch_module.state_dict().items()}`` loads as-is.
"""
import numpy as np

from . import functional as F
from ._validation import FLOAT_DTYPES

__all__ = ["Module", "LayerNorm", "RMSNorm"]


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


def _shape_tuple(normalized_shape):
    if isinstance(normalized_shape, (int, np.integer)):
        return (int(normalized_shape),)
    return tuple(int(s) for s in normalized_shape)


class _RowNorm(Module):
    def __init__(self, normalized_shape, eps, dtype):
        super().__init__(dtype)
        self.normalized_shape = _shape_tuple(normalized_shape)
        self.eps = eps

    def _axis(self, x):
        k = len(self.normalized_shape)
        if x.ndim < k or x.shape[x.ndim - k:] != self.normalized_shape:
            raise ValueError(f"{type(self).__name__} expects input of shape (*, {', '.join(map(str, self.normalized_shape))}), got {x.shape}")
        return x.ndim - k


class LayerNorm(_RowNorm):
    """Layer normalization over the trailing ``normalized_shape`` (``torch.nn.LayerNorm``).

    Params ``weight`` (ones) and ``bias`` (zeros) when ``elementwise_affine`` (``bias=False``
    drops the bias). See ``fastnorm.functional.layer_norm`` for the formula.

    >>> import numpy as np; from fastnorm import nn
    >>> ln = nn.LayerNorm(4)
    >>> y = ln(np.arange(8, dtype=np.float32).reshape(2, 4))
    >>> dx = ln.backward(np.ones_like(y)); sorted(ln.grads)
    ['bias', 'weight']
    """

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True, dtype=np.float32):
        super().__init__(normalized_shape, eps, dtype)
        self.elementwise_affine = elementwise_affine
        if elementwise_affine:
            self.params["weight"] = np.ones(self.normalized_shape, self.dtype)
            if bias:
                self.params["bias"] = np.zeros(self.normalized_shape, self.dtype)

    def forward(self, x):
        x = self._check_input(x)
        axis = self._axis(x)
        w, b = self.params.get("weight"), self.params.get("bias")
        y, mean, rstd = F.layer_norm(x, w, b, axis=axis, eps=self.eps, return_stats=True)
        self._cache = (x, axis, (mean, rstd)) if self.training else None
        return y

    def backward(self, dy):
        x, axis, stats = self._cached()
        w, b = self.params.get("weight"), self.params.get("bias")
        dx, dw, db = F.layer_norm_backward(dy, x, w, b, axis=axis, eps=self.eps, stats=stats)
        self.grads = {k: g for k, g in (("weight", dw), ("bias", db)) if k in self.params}
        return dx


class RMSNorm(_RowNorm):
    """RMS normalization over the trailing ``normalized_shape`` (``torch.nn.RMSNorm``).

    Param ``weight`` (ones) when ``elementwise_affine``. ``eps`` defaults to 1e-6 (torch's
    None means the dtype's machine epsilon). See ``fastnorm.functional.rms_norm``.
    """

    def __init__(self, normalized_shape, eps=1e-6, elementwise_affine=True, dtype=np.float32):
        super().__init__(normalized_shape, eps, dtype)
        if eps is None:
            self.eps = float(np.finfo(self.dtype).eps)
        self.elementwise_affine = elementwise_affine
        if elementwise_affine:
            self.params["weight"] = np.ones(self.normalized_shape, self.dtype)

    def forward(self, x):
        x = self._check_input(x)
        axis = self._axis(x)
        y, rstd = F.rms_norm(x, self.params.get("weight"), axis=axis, eps=self.eps, return_stats=True)
        self._cache = (x, axis, rstd) if self.training else None
        return y

    def backward(self, dy):
        x, axis, rstd = self._cached()
        dx, dw = F.rms_norm_backward(dy, x, self.params.get("weight"), axis=axis, eps=self.eps, stats=rstd)
        self.grads = {"weight": dw} if "weight" in self.params else {}
        return dx
