"""The functional API: ``import fastnorm.functional as fn``.

Every op takes and returns NumPy arrays (or CUDA device arrays, which stay on the device);
see each function's docstring for its formula and its PyTorch/ONNX/SciPy counterpart.
One module per family of ops; each lists its public functions in ``__all__``.
"""
from . import local, norm
from .local import *  # noqa: F401,F403
from .norm import *  # noqa: F401,F403

__all__ = [*norm.__all__, *local.__all__]
