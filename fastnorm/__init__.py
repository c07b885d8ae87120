"""fastnorm: fast, reproducible kernels for the numerical core of neural-network training.

    import fastnorm.functional as fn      # layer_norm, rms_norm, ... and their backwards
    from fastnorm import nn               # LayerNorm, RMSNorm, ... stateful layers

CPU backends: 'cython' (compiled, the default when built) and 'numba' (JIT, cached to disk);
arrays on a CUDA device run numba.cuda kernels. Both CPU backends give bitwise-identical
results for any thread count.
"""
from ._dispatch import get_backend, get_num_threads, set_backend, set_num_threads
from . import functional
from . import nn
from . import init, optim, random
from .io import load, save

__version__ = "0.1.0"
__all__ = ["functional", "nn", "optim", "init", "random", "save", "load", "set_backend",
           "get_backend", "set_num_threads", "get_num_threads"]
