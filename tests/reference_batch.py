"""Float64 NumPy references for the batch-statistics ops (written from the formulas, not from
the kernels), and their PyTorch counterparts, the second oracle."""
import numpy as np


def _f64(a):
    return None if a is None else np.asarray(a, dtype=np.float64)


def _bshape(ndim, axis):
    """Shape that broadcasts a (C,) vector along ``axis`` of an ndim array."""
    s = [1] * ndim
    s[axis % ndim] = -1
    return s


def _normalize(x, red):
    mean = x.mean(axis=red, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=red, keepdims=True)
    return mean, var


def _affine(y, weight, bias, shape):
    if weight is not None:
        y = y * _f64(weight).reshape(shape)
    if bias is not None:
        y = y + _f64(bias).reshape(shape)
    return y


def batch_norm(x, running_mean=None, running_var=None, weight=None, bias=None, *,
               training=False, momentum=0.1, eps=1e-5, axis=1):
    """(y, new_running_mean, new_running_var) (None where not given)."""
    x = _f64(x)
    axis = axis % x.ndim
    red = tuple(a for a in range(x.ndim) if a != axis)
    shape = _bshape(x.ndim, axis)
    rm, rv = _f64(running_mean), _f64(running_var)
    if training or rm is None:
        mean, var = _normalize(x, red)
        n = x.size // x.shape[axis]
        if training and rm is not None:
            rm = (1 - momentum) * rm + momentum * mean.ravel()
            rv = (1 - momentum) * rv + momentum * var.ravel() * n / (n - 1)
    else:
        mean, var = rm.reshape(shape), rv.reshape(shape)
    y = (x - mean) / np.sqrt(var + eps)
    return _affine(y, weight, bias, shape), rm, rv


def _grads(dy, x, weight, bias, mean, var, eps, red, batch, sum_axes, shape):
    """dx for y = (x - mean)/sqrt(var + eps) * w + b with stats over ``red`` (batch) or fixed."""
    xhat = (x - mean) / np.sqrt(var + eps)
    w = 1.0 if weight is None else _f64(weight).reshape(shape)
    g = dy * w
    invstd = 1 / np.sqrt(var + eps)
    if batch:
        dx = invstd * (g - g.mean(axis=red, keepdims=True)
                       - xhat * (g * xhat).mean(axis=red, keepdims=True))
    else:
        dx = g * invstd
    dw = None if weight is None else (dy * xhat).sum(axis=sum_axes)
    db = None if bias is None else dy.sum(axis=sum_axes)
    return dx, dw, db


def batch_norm_backward(dy, x, running_mean=None, running_var=None, weight=None, bias=None, *,
                        training=False, eps=1e-5, axis=1, **_):
    dy, x = _f64(dy), _f64(x)
    axis = axis % x.ndim
    red = tuple(a for a in range(x.ndim) if a != axis)
    shape = _bshape(x.ndim, axis)
    batch = training or running_mean is None
    if batch:
        mean, var = _normalize(x, red)
    else:
        mean, var = _f64(running_mean).reshape(shape), _f64(running_var).reshape(shape)
    return _grads(dy, x, weight, bias, mean, var, eps, red, batch, red, shape)


def instance_norm(x, weight=None, bias=None, running_mean=None, running_var=None, *,
                  training=True, momentum=0.1, eps=1e-5):
    x = _f64(x)
    red = tuple(range(2, x.ndim))
    shape = _bshape(x.ndim, 1)
    rm, rv = _f64(running_mean), _f64(running_var)
    if training:
        mean, var = _normalize(x, red)
        n = int(np.prod(x.shape[2:]))
        if rm is not None:
            rm = (1 - momentum) * rm + momentum * mean.reshape(x.shape[:2]).mean(0)
            rv = (1 - momentum) * rv + momentum * (var.reshape(x.shape[:2]) * n / (n - 1)).mean(0)
    else:
        mean, var = rm.reshape(shape), rv.reshape(shape)
    y = (x - mean) / np.sqrt(var + eps)
    return _affine(y, weight, bias, shape), rm, rv


def instance_norm_backward(dy, x, weight=None, bias=None, running_mean=None, running_var=None, *,
                           training=True, eps=1e-5, **_):
    dy, x = _f64(dy), _f64(x)
    red = tuple(range(2, x.ndim))
    shape = _bshape(x.ndim, 1)
    if training:
        mean, var = _normalize(x, red)
    else:
        mean, var = _f64(running_mean).reshape(shape), _f64(running_var).reshape(shape)
    sum_axes = (0,) + red
    return _grads(dy, x, weight, bias, mean, var, eps, red, training, sum_axes, shape)


def group_norm(x, num_groups, weight=None, bias=None, *, eps=1e-5):
    x = _f64(x)
    N, C = x.shape[:2]
    xg = x.reshape(N, num_groups, -1)
    mean, var = _normalize(xg, (2,))
    y = ((xg - mean) / np.sqrt(var + eps)).reshape(x.shape)
    return _affine(y, weight, bias, _bshape(x.ndim, 1))


def group_norm_backward(dy, x, num_groups, weight=None, bias=None, *, eps=1e-5, **_):
    dy, x = _f64(dy), _f64(x)
    N, C = x.shape[:2]
    shape = _bshape(x.ndim, 1)
    xg = x.reshape(N, num_groups, -1)
    mean, var = _normalize(xg, (2,))
    xhat = ((xg - mean) / np.sqrt(var + eps)).reshape(x.shape)
    w = 1.0 if weight is None else _f64(weight).reshape(shape)
    g = (dy * w).reshape(N, num_groups, -1)
    xh = xhat.reshape(g.shape)
    dx = (g - g.mean(2, keepdims=True) - xh * (g * xh).mean(2, keepdims=True)) / np.sqrt(var + eps)
    sum_axes = (0,) + tuple(range(2, x.ndim))
    dw = None if weight is None else (dy * xhat).sum(axis=sum_axes)
    db = None if bias is None else dy.sum(axis=sum_axes)
    return dx.reshape(x.shape), dw, db


# ---------------------------------------------------------------- PyTorch


def _t(a, grad=False):
    import torch

    return None if a is None else torch.tensor(np.ascontiguousarray(a), requires_grad=grad)


def _np(t):
    return None if t is None else t.detach().numpy()


def torch_grads(fwd, dy, arrays):
    ts = [_t(a, a is not None) for a in arrays]
    y = fwd(*ts)
    y.backward(_t(dy))
    return tuple(None if t is None else _np(t.grad) for t in ts)


def torch_batch_norm(x, running_mean=None, running_var=None, weight=None, bias=None, *,
                     training=False, momentum=0.1, eps=1e-5, axis=1):
    """(y, running_mean, running_var) from torch (channels moved to axis 1 and back)."""
    import torch.nn.functional as F

    x = np.moveaxis(np.asarray(x), axis, 1)
    rm, rv = _t(running_mean), _t(running_var)
    y = F.batch_norm(_t(x), rm, rv, _t(weight), _t(bias), training, momentum, eps)
    return np.moveaxis(_np(y), 1, axis), _np(rm), _np(rv)


def torch_batch_norm_backward(dy, x, running_mean=None, running_var=None, weight=None, bias=None, *,
                              training=False, eps=1e-5, axis=1, **_):
    import torch.nn.functional as F

    x = np.moveaxis(np.asarray(x), axis, 1)
    dy = np.moveaxis(np.asarray(dy), axis, 1)
    rm, rv = _t(running_mean), _t(running_var)
    dx, dw, db = torch_grads(lambda tx, tw, tb: F.batch_norm(tx, rm, rv, tw, tb, training, 0.0, eps),
                             dy, (x, weight, bias))
    return np.moveaxis(dx, 1, axis), dw, db


def torch_instance_norm(x, weight=None, bias=None, running_mean=None, running_var=None, *,
                        training=True, momentum=0.1, eps=1e-5):
    import torch.nn.functional as F

    rm, rv = _t(running_mean), _t(running_var)
    y = F.instance_norm(_t(x), rm, rv, _t(weight), _t(bias), training, momentum, eps)
    return _np(y), _np(rm), _np(rv)


def torch_instance_norm_backward(dy, x, weight=None, bias=None, running_mean=None,
                                 running_var=None, *, training=True, eps=1e-5, **_):
    import torch.nn.functional as F

    rm, rv = _t(running_mean), _t(running_var)
    return torch_grads(lambda tx, tw, tb: F.instance_norm(tx, rm, rv, tw, tb, training, 0.0, eps),
                       dy, (x, weight, bias))


def torch_group_norm(x, num_groups, weight=None, bias=None, *, eps=1e-5):
    import torch.nn.functional as F

    return _np(F.group_norm(_t(x), num_groups, _t(weight), _t(bias), eps))


def torch_group_norm_backward(dy, x, num_groups, weight=None, bias=None, *, eps=1e-5, **_):
    import torch.nn.functional as F

    return torch_grads(lambda tx, tw, tb: F.group_norm(tx, num_groups, tw, tb, eps), dy, (x, weight, bias))
