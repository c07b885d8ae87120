"""local_response_norm, lp_normalize, weight_norm and cosine_linear, forward and backward, per
CPU backend and size (inputs, calls and byte counts from the registry in fastnorm.bench, the
one ``python -m fastnorm bench`` runs)."""
from ._common import forward_backward

# cache-resident, the headline (25.7 MB), and a 103 MB batch
LocalResponseNorm = forward_backward(
    "LocalResponseNorm", "local_response_norm", "local_response_norm_backward",
    [(4, 64, 16, 16), (32, 64, 56, 56), (128, 64, 56, 56)])

LpNormalize = forward_backward(
    "LpNormalize", "lp_normalize", "lp_normalize_backward",
    [(64, 1024), (4096, 1024), (65536, 1024)])

WeightNorm = forward_backward(
    "WeightNorm", "weight_norm", "weight_norm_backward",
    [(64, 1024), (4096, 1024), (65536, 1024)])

CosineLinear = forward_backward(
    "CosineLinear", "cosine_linear", "cosine_linear_backward",
    [(64, 256), (512, 1024), (4096, 1024)])
