"""The oracle table: float64 NumPy references for every fastnorm op, and PyTorch where it has one.

Every reference takes any float input, computes in float64 with plain vectorized NumPy (written
from the formulas, not from the kernels) and returns float64. Backward references return the
same tuple as fastnorm's backward (None where a parameter is None). Tests and benchmarks both
iterate ``REFERENCES`` / ``TORCH``; a new op adds one function to each (torch only where it has
the op). torch is imported lazily, so this module works without it.
"""
import numpy as np


def _f64(a):
    return None if a is None else np.asarray(a, dtype=np.float64)


def _norm_axes(x, axis):
    axis = axis % x.ndim
    return tuple(range(axis, x.ndim)), tuple(range(axis))


# ---------------------------------------------------------------- layer_norm / rms_norm


def layer_norm(x, weight=None, bias=None, *, axis=-1, eps=1e-5):
    x = _f64(x)
    red, _ = _norm_axes(x, axis)
    mean = x.mean(axis=red, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=red, keepdims=True)  # two-pass, biased
    y = (x - mean) / np.sqrt(var + eps)
    if weight is not None:
        y = y * _f64(weight)
    if bias is not None:
        y = y + _f64(bias)
    return y


def layer_norm_stats(x, *, axis=-1, eps=1e-5):
    """(mean, invstd) of the rows, shape x.shape[:axis]."""
    x = _f64(x)
    red, _ = _norm_axes(x, axis)
    mean = x.mean(axis=red)
    var = ((x - mean.reshape(mean.shape + (1,) * len(red))) ** 2).mean(axis=red)
    return mean, 1.0 / np.sqrt(var + eps)


def layer_norm_backward(dy, x, weight=None, bias=None, *, axis=-1, eps=1e-5):
    dy, x = _f64(dy), _f64(x)
    red, lead = _norm_axes(x, axis)
    n = int(np.prod([x.shape[a] for a in red]))
    mean = x.mean(axis=red, keepdims=True)
    invstd = 1.0 / np.sqrt(((x - mean) ** 2).mean(axis=red, keepdims=True) + eps)
    xhat = (x - mean) * invstd
    g = dy if weight is None else dy * _f64(weight)
    # d/dx of (x - mean) * invstd applied to g: (n g - sum g - xhat sum(g xhat)) * invstd / n
    dx = (n * g - g.sum(axis=red, keepdims=True)
          - xhat * (g * xhat).sum(axis=red, keepdims=True)) * (invstd / n)
    dweight = None if weight is None else (dy * xhat).sum(axis=lead)
    dbias = None if bias is None else dy.sum(axis=lead)
    return dx, dweight, dbias


def rms_norm(x, weight=None, *, axis=-1, eps=1e-6):
    x = _f64(x)
    red, _ = _norm_axes(x, axis)
    y = x / np.sqrt((x * x).mean(axis=red, keepdims=True) + eps)
    return y if weight is None else y * _f64(weight)


def rms_norm_stats(x, *, axis=-1, eps=1e-6):
    """invrms of the rows, shape x.shape[:axis]."""
    x = _f64(x)
    red, _ = _norm_axes(x, axis)
    return 1.0 / np.sqrt((x * x).mean(axis=red) + eps)


def rms_norm_backward(dy, x, weight=None, *, axis=-1, eps=1e-6):
    dy, x = _f64(dy), _f64(x)
    red, lead = _norm_axes(x, axis)
    invrms = 1.0 / np.sqrt((x * x).mean(axis=red, keepdims=True) + eps)
    xhat = x * invrms
    g = dy if weight is None else dy * _f64(weight)
    dx = (g - xhat * (g * xhat).mean(axis=red, keepdims=True)) * invrms
    dweight = None if weight is None else (dy * xhat).sum(axis=lead)
    return dx, dweight


REFERENCES = {
    "layer_norm": layer_norm,
    "layer_norm_backward": layer_norm_backward,
    "rms_norm": rms_norm,
    "rms_norm_backward": rms_norm_backward,
}


# ---------------------------------------------------------------- PyTorch, the second oracle


def _t(a, requires_grad=False):
    import torch

    if a is None:
        return None
    return torch.tensor(np.ascontiguousarray(a), requires_grad=requires_grad)


def _np(t):
    return None if t is None else t.detach().numpy()


def _torch_backward(fwd, dy, arrays):
    """Gradients of sum(fwd(*tensors) * dy) w.r.t. the non-None arrays, via autograd."""
    ts = [_t(a, requires_grad=True) for a in arrays]
    y = fwd(*ts)
    y.backward(_t(dy))
    return tuple(None if t is None else _np(t.grad) for t in ts)


def torch_layer_norm(x, weight=None, bias=None, *, axis=-1, eps=1e-5):
    import torch.nn.functional as F

    x = np.asarray(x)
    return _np(F.layer_norm(_t(x), x.shape[axis % x.ndim:], _t(weight), _t(bias), eps))


def torch_layer_norm_backward(dy, x, weight=None, bias=None, *, axis=-1, eps=1e-5):
    import torch.nn.functional as F

    x = np.asarray(x)
    shape = x.shape[axis % x.ndim:]
    return _torch_backward(lambda tx, tw, tb: F.layer_norm(tx, shape, tw, tb, eps), dy, (x, weight, bias))


def torch_rms_norm(x, weight=None, *, axis=-1, eps=1e-6):
    import torch.nn.functional as F

    x = np.asarray(x)
    return _np(F.rms_norm(_t(x), x.shape[axis % x.ndim:], _t(weight), eps))


def torch_rms_norm_backward(dy, x, weight=None, *, axis=-1, eps=1e-6):
    import torch.nn.functional as F

    x = np.asarray(x)
    shape = x.shape[axis % x.ndim:]
    return _torch_backward(lambda tx, tw: F.rms_norm(tx, shape, tw, eps), dy, (x, weight))


TORCH = {
    "layer_norm": torch_layer_norm,
    "layer_norm_backward": torch_layer_norm_backward,
    "rms_norm": torch_rms_norm,
    "rms_norm_backward": torch_rms_norm_backward,
}
