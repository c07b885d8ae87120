"""fastnorm: fast, reproducible kernels for the numerical core of neural-network training.

    import fastnorm.functional as fn      # normalizations, dropout, penalties, divergences,
                                          # losses, AIC/BIC ... and their backwards; each is
    fastnorm.layer_norm(x)                # also here at the top level, as NumPy users expect
    from fastnorm import nn               # LayerNorm, BatchNorm2d, Dropout, ... stateful layers
    from fastnorm import optim            # SGD, Adam, ... with torch.optim's math and state_dicts
    fastnorm.save(path, state_dict); fastnorm.load(path)   # safetensors, checksummed, atomic
    fastnorm.init, fastnorm.random        # initializers; the Philox counter-based generator

CPU backends: 'cython' (compiled, the default when built) and 'numba' (JIT, cached to disk);
arrays on a CUDA device run numba.cuda kernels. Both CPU backends give bitwise-identical
results for any thread count.

The package's folders follow the call path: the public API (``functional``, gathering the op
families of ``ops/``; ``nn``; ``optim``; ``io``, ``init``, ``random``) validates arguments
(``_validation``) and asks ``_dispatch`` for a kernel module, whose one table names the loops of
each backend in ``fastnorm.kernels`` (``cython/``, ``numba/``) or, for device arrays, the
numba.cuda host module in ``cuda/`` that launches ``fastnorm.kernels.cuda``. ``bench/`` (the
``python -m fastnorm bench`` command and its registry) stands apart.
"""
from ._dispatch import get_backend, get_num_threads, set_backend, set_num_threads
from . import functional
from .functional import *  # noqa: F401,F403  (fastnorm.layer_norm is fastnorm.functional.layer_norm)
from . import nn
from . import init, optim, random
from .io import load, save

__version__ = "0.1.0"
__all__ = ["functional", "nn", "optim", "init", "random", "save", "load", "set_backend",
           "get_backend", "set_num_threads", "get_num_threads", *functional.__all__]
