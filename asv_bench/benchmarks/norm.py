"""layer_norm and rms_norm, forward and backward, per CPU backend and size.

Inputs, the fastnorm call (preallocated ``out=``) and the bytes each call must move come from
the registry in ``fastnorm.bench``, the one ``python -m fastnorm bench`` runs. Sizes go from
cache-resident (64x1024 float32, 256 KB) to far beyond it (65536x1024, 256 MB).
"""
from ._common import forward_backward

SHAPES = [(64, 1024), (4096, 1024), (65536, 1024)]

LayerNorm = forward_backward(
    "LayerNorm", "layer_norm", "layer_norm_backward", SHAPES)

RMSNorm = forward_backward(
    "RMSNorm", "rms_norm", "rms_norm_backward", SHAPES)
