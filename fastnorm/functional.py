"""The functional API: ``import fastnorm.functional as fn``.

Every op takes and returns NumPy arrays (or CUDA device arrays, which stay on the device);
see each function's docstring for its formula and its PyTorch/ONNX/SciPy counterpart.
The ops live in ``fastnorm.ops``, one module per family, each listing its public functions in
``__all__``; this module gathers them (they are also exported at the top level:
``fastnorm.layer_norm`` is ``fastnorm.functional.layer_norm``).
"""
from .ops import batch as _batch, dropout as _dropout, local as _local, norm as _norm
from .ops import regularization as _regularization
from .ops import divergence as _divergence, loss as _loss, selection as _selection
from .ops.norm import *  # noqa: F401,F403
from .ops.batch import *  # noqa: F401,F403
from .ops.local import *  # noqa: F401,F403
from .ops.dropout import *  # noqa: F401,F403
from .ops.regularization import *  # noqa: F401,F403
from .ops.divergence import *  # noqa: F401,F403
from .ops.loss import *  # noqa: F401,F403
from .ops.selection import *  # noqa: F401,F403

__all__ = [*_norm.__all__, *_batch.__all__, *_local.__all__, *_dropout.__all__,
           *_regularization.__all__, *_divergence.__all__, *_loss.__all__, *_selection.__all__]
