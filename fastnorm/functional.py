"""The functional API: ``import fastnorm.functional as fn``.

Every op takes and returns NumPy arrays (or CUDA device arrays, which stay on the device);
see each function's docstring for its formula and its PyTorch/ONNX/SciPy counterpart.
One module per family of ops; each lists its public functions in ``__all__``.
"""
from . import batch, norm
from .norm import *  # noqa: F401,F403
from .batch import *  # noqa: F401,F403

__all__ = [*norm.__all__, *batch.__all__]
from . import dropout as _dropout, regularization as _regularization  # noqa: E402
from .dropout import *  # noqa: F401,F403,E402
from .regularization import *  # noqa: F401,F403,E402
__all__ += [*_dropout.__all__, *_regularization.__all__]
