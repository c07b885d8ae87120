"""The functional API: ``import fastnorm.functional as fn``.

Every op takes and returns NumPy arrays (or CUDA device arrays, which stay on the device);
see each function's docstring for its formula and its PyTorch/ONNX/SciPy counterpart.
"""
from .norm import layer_norm, layer_norm_backward, rms_norm, rms_norm_backward

__all__ = ["layer_norm", "layer_norm_backward", "rms_norm", "rms_norm_backward"]
