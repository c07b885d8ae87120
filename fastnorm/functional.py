"""The functional API: ``import fastnorm.functional as fn``.

Every op takes and returns NumPy arrays (or CUDA device arrays, which stay on the device);
see each function's docstring for its formula and its PyTorch/ONNX/SciPy counterpart.
One module per family of ops; each lists its public functions in ``__all__`` (aliased here:
a module may share its name with one of its functions, as ``dropout`` does).
"""
from . import batch as _batch, dropout as _dropout, local as _local, norm as _norm
from . import regularization as _regularization
from . import divergence as _divergence, loss as _loss, selection as _selection
from .norm import *  # noqa: F401,F403
from .batch import *  # noqa: F401,F403
from .local import *  # noqa: F401,F403
from .dropout import *  # noqa: F401,F403
from .regularization import *  # noqa: F401,F403
from .divergence import *  # noqa: F401,F403
from .loss import *  # noqa: F401,F403
from .selection import *  # noqa: F401,F403

__all__ = [*_norm.__all__, *_batch.__all__, *_local.__all__, *_dropout.__all__,
           *_regularization.__all__, *_divergence.__all__, *_loss.__all__, *_selection.__all__]
