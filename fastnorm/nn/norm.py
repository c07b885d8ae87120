"""Row-normalization layers: LayerNorm and RMSNorm."""
import numpy as np

from ..ops import norm as F
from ._module import Module

__all__ = ["LayerNorm", "RMSNorm"]


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
        ndim = len(x.shape)
        if ndim < k or tuple(x.shape[ndim - k:]) != self.normalized_shape:
            raise ValueError(f"{type(self).__name__} expects input of shape (*, {', '.join(map(str, self.normalized_shape))}), got {x.shape}")
        return ndim - k


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
