"""Stateful layers: thin wrappers around fastnorm.functional with PyTorch's names.

Each layer: ``y = layer(x)``; ``dx = layer.backward(dy)`` (uses what the last forward in
training mode cached and fills ``layer.grads``, same keys as ``layer.params``). The cache holds
a reference to the forward's input, as torch's autograd does: modify that array before
``backward`` and the gradient is of the modified values; ``.train()``, ``.eval()``,
``.training``; ``.params`` (name -> array, updated in place by optimizers);
``state_dict()`` / ``load_state_dict(d)`` with PyTorch's key names, so
``{k: t.numpy() for k, t in torch_module.state_dict().items()}`` loads as-is.

One module per family of layers; each lists its layers in ``__all__``.
"""
from . import _module, batch as _batch, dropout as _dropout, local as _local, norm as _norm
from . import linear as _linear
from ._module import *  # noqa: F401,F403
from .norm import *  # noqa: F401,F403
from .batch import *  # noqa: F401,F403
from .local import *  # noqa: F401,F403
from .dropout import *  # noqa: F401,F403
from .linear import *  # noqa: F401,F403

__all__ = [*_module.__all__, *_norm.__all__, *_batch.__all__, *_local.__all__, *_dropout.__all__,
           *_linear.__all__]
