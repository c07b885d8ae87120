"""batch_norm (training, eval, channels-last), instance_norm, group_norm: forward and backward,
per CPU backend and size.

Inputs, the fastnorm call (preallocated ``out=``) and the bytes each call must move come from
the registry in ``fastnorm.bench`` (``fastnorm/bench/batch.py``), the one ``python -m fastnorm
bench`` runs. Sizes go from cache-resident (8x64x8x8 float32, 128 KB) to the issue's headline
(64x64x56x56, 51 MB).
"""
from ._common import forward_backward

SHAPES = [(8, 64, 8, 8), (8, 64, 28, 28), (64, 64, 56, 56)]

BatchNormTrain = forward_backward(
    "BatchNormTrain", "batch_norm", "batch_norm_backward", SHAPES)

BatchNormEval = forward_backward(
    "BatchNormEval", "batch_norm_eval", "batch_norm_backward", SHAPES)

BatchNormChannelsLast = forward_backward(
    "BatchNormChannelsLast", "batch_norm_channels_last", "batch_norm_channels_last_backward",
    SHAPES)

InstanceNorm = forward_backward(
    "InstanceNorm", "instance_norm", "instance_norm_backward", SHAPES)

GroupNorm = forward_backward(
    "GroupNorm", "group_norm", "group_norm_backward", SHAPES)
