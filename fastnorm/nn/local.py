"""Local and parameter normalization layers: LocalResponseNorm and WeightNorm."""
import numpy as np

from .. import _validation as val
from ..ops import local as F
from ._module import Module

__all__ = ["LocalResponseNorm", "WeightNorm"]


class LocalResponseNorm(Module):
    """Local response normalization across channels (``torch.nn.LocalResponseNorm``): no
    params, no state; see ``fastnorm.functional.local_response_norm`` for the formula.

    >>> import numpy as np; from fastnorm import nn
    >>> lrn = nn.LocalResponseNorm(2)
    >>> y = lrn(np.ones((1, 3, 2), np.float32))
    >>> lrn.backward(np.ones_like(y)).shape
    (1, 3, 2)
    """

    def __init__(self, size, alpha=1e-4, beta=0.75, k=1.0, dtype=np.float32):
        super().__init__(dtype)
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, x):
        x = self._check_input(x)
        y = F.local_response_norm(x, self.size, alpha=self.alpha, beta=self.beta, k=self.k)
        self._cache = x if self.training else None
        return y

    def backward(self, dy):
        x = self._cached()
        self.grads = {}
        return F.local_response_norm_backward(dy, x, self.size, alpha=self.alpha, beta=self.beta,
                                              k=self.k)


class WeightNorm(Module):
    """Weight normalization of another layer's weight (Salimans & Kingma): holds the direction
    ``weight_v`` and the magnitude ``weight_g`` as params; ``w = layer()`` (or ``.weight``)
    gives ``g * v / ||v||`` (norm over every axis but ``axis``) for the layer that uses it;
    ``layer.backward(dw)`` turns that layer's weight gradient into ``grads['weight_g']`` and
    ``grads['weight_v']`` (and returns None: there is no input gradient).

    state_dict keys are those of the classic ``torch.nn.utils.weight_norm(module, dim=axis)``:
    ``weight_g`` with torch's shape (C at ``axis``, 1 elsewhere; () for ``axis=None``) and
    ``weight_v``. (The newer ``torch.nn.utils.parametrizations.weight_norm`` names the same two
    tensors ``parametrizations.weight.original0`` / ``original1``: rename them to load.)
    Initialized from ``weight`` as torch does: v = weight, g = ||weight||, so w == weight.

    >>> import numpy as np; from fastnorm import nn
    >>> wn = nn.WeightNorm(np.array([[3.0, 4.0], [0.0, 2.0]], np.float32))
    >>> wn()
    array([[3., 4.],
           [0., 2.]], dtype=float32)
    >>> sorted(wn.state_dict()), wn.params["weight_g"].ravel()
    (['weight_g', 'weight_v'], array([5., 2.], dtype=float32))
    """

    def __init__(self, weight, axis=0, dtype=None):
        weight = val.float_array(weight, "weight")
        super().__init__(weight.dtype if dtype is None else dtype)
        weight = np.array(weight, dtype=self.dtype, order="C", copy=True)
        self.axis = axis
        if axis is None:
            gshape = ()
            norms = np.sqrt(np.sum(weight.astype(np.float64) ** 2))
        else:
            ax = val.normalize_axis(axis, weight.ndim)
            gshape = tuple(s if i == ax else 1 for i, s in enumerate(weight.shape))
            red = tuple(i for i in range(weight.ndim) if i != ax)
            norms = np.sqrt(np.sum(weight.astype(np.float64) ** 2, axis=red, keepdims=True))
        self.params["weight_g"] = np.asarray(norms, self.dtype).reshape(gshape).copy()
        self.params["weight_v"] = weight

    def __call__(self, x=None):
        return self.forward(x)

    @property
    def weight(self):
        """The normalized weight g * v / ||v||."""
        return F.weight_norm(self.params["weight_v"], self.params["weight_g"], axis=self.axis)

    def forward(self, x=None):
        """The normalized weight (``x`` is ignored: the layer normalizes its own params)."""
        w = self.weight
        self._cache = True if self.training else None
        return w

    def backward(self, dw):
        self._cached()
        dv, dg = F.weight_norm_backward(dw, self.params["weight_v"], self.params["weight_g"],
                                        axis=self.axis)
        self.grads = {"weight_g": dg, "weight_v": dv}
        return None
