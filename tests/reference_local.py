"""float64 NumPy references for fastnorm.ops.local (LRN, Lp, weight and cosine normalization), and
their PyTorch counterparts: written from the formulas (direct window sums, no sliding tricks)."""
import numpy as np


def _f64(a):
    return np.asarray(a, dtype=np.float64)


def _window_sums(q, size):
    """S[:, c] = sum of q[:, j] over j in [c - size//2, c + (size-1)//2] within [0, C)."""
    C = q.shape[1]
    S = np.zeros_like(q)
    for c in range(C):
        lo, hi = max(0, c - size // 2), min(C, c + (size - 1) // 2 + 1)
        if lo < hi:
            S[:, c] = q[:, lo:hi].sum(axis=1)
    return S


def local_response_norm(x, size, *, alpha=1e-4, beta=0.75, k=1.0):
    x = _f64(x)
    return x / (k + alpha / size * _window_sums(x * x, size)) ** beta


def local_response_norm_backward(dy, x, size, *, alpha=1e-4, beta=0.75, k=1.0):
    dy, x = _f64(dy), _f64(x)
    C = x.shape[1]
    D = k + alpha / size * _window_sums(x * x, size)
    q = dy * x * D ** (-beta - 1)
    # channel i sits in the windows of c in [i - (size-1)//2, i + size//2]
    T = np.zeros_like(q)
    for i in range(C):
        lo, hi = max(0, i - (size - 1) // 2), min(C, i + size // 2 + 1)
        if lo < hi:
            T[:, i] = q[:, lo:hi].sum(axis=1)
    return dy * D ** -beta - 2 * alpha * beta / size * x * T


def lp_norm(x, p, axis):
    x = _f64(x)
    if np.isinf(p):
        return np.abs(x).max(axis=axis, keepdims=True)
    return (np.abs(x) ** p).sum(axis=axis, keepdims=True) ** (1 / p)


def lp_normalize(x, *, p=2, axis=-1, eps=1e-12):
    x = _f64(x)
    return x / np.maximum(lp_norm(x, p, axis), eps)


def weight_norm(v, g, *, axis=0):
    v = _f64(v)
    if axis is None:
        return v * (float(np.asarray(g).reshape(())) / np.sqrt((v * v).sum()))
    axis = axis % v.ndim
    red = tuple(i for i in range(v.ndim) if i != axis)
    shape = tuple(v.shape[axis] if i == axis else 1 for i in range(v.ndim))
    return v * (_f64(g).reshape(shape) / np.sqrt((v * v).sum(axis=red, keepdims=True)))


def weight_norm_backward(dw, v, g, *, axis=0):
    """(dv, dg) by the seeds' formulas (Salimans & Kingma)."""
    dw, v = _f64(dw), _f64(v)
    if axis is None:
        red, shape = None, ()
    else:
        axis = axis % v.ndim
        red = tuple(i for i in range(v.ndim) if i != axis)
        shape = tuple(v.shape[axis] if i == axis else 1 for i in range(v.ndim))
    g64 = _f64(g).reshape(shape)
    nrm = np.sqrt((v * v).sum(axis=red, keepdims=True))
    dg = (dw * v).sum(axis=red, keepdims=True) / nrm
    dv = g64 / nrm * dw - g64 * dg / nrm ** 2 * v
    return dv, dg.reshape(np.shape(g))


def cosine_linear(x, w, *, eps=1e-8):
    x, w = _f64(x), _f64(w)
    xn = x / np.maximum(np.sqrt((x * x).sum(-1, keepdims=True)), eps)
    wn = w / np.maximum(np.sqrt((w * w).sum(-1, keepdims=True)), eps)
    return xn @ wn.T


def cosine_linear_backward(dy, x, w, *, eps=1e-8):
    """The chain rule written out with the forward's y (three float64 products), for
    nonzero rows: d/dx of y = xn . wn with xn = x / |x|."""
    x, w, dy = _f64(x), _f64(w), _f64(dy)
    K, O = x.shape[-1], w.shape[0]
    x2, dy2 = x.reshape(-1, K), dy.reshape(-1, O)
    nx = np.maximum(np.sqrt((x2 * x2).sum(-1)), eps)
    nw = np.maximum(np.sqrt((w * w).sum(-1)), eps)
    y = (x2 / nx[:, None]) @ (w / nw[:, None]).T
    t = dy2 * y
    dx = (dy2 / nw) @ w / nx[:, None] - x2 * (t.sum(1) / nx ** 2)[:, None]
    dw = (dy2 / nx[:, None]).T @ x2 / nw[:, None] - w * (t.sum(0) / nw ** 2)[:, None]
    return dx.reshape(x.shape), dw


# ---------------------------------------------------------------- PyTorch


def _t(a, grad=False):
    import torch

    return torch.tensor(np.ascontiguousarray(a), requires_grad=grad)


def torch_local_response_norm(x, size, *, alpha=1e-4, beta=0.75, k=1.0, dy=None):
    """y, or dx when dy is given (autograd)."""
    import torch.nn.functional as F

    tx = _t(x, dy is not None)
    y = F.local_response_norm(tx, size, alpha, beta, k)
    if dy is None:
        return y.detach().numpy()
    y.backward(_t(dy))
    return tx.grad.numpy()


def torch_lp_normalize(x, *, p=2, axis=-1, eps=1e-12, dy=None):
    import torch.nn.functional as F

    tx = _t(x, dy is not None)
    y = F.normalize(tx, p=p, dim=axis, eps=eps)
    if dy is None:
        return y.detach().numpy()
    y.backward(_t(dy))
    return tx.grad.numpy()


def torch_weight_norm(v, g, *, axis=0, dw=None):
    """w, or (dv, dg) when dw is given; torch reads dim=-1 as the whole tensor."""
    import torch

    gshape = np.shape(g)
    if axis is not None:
        axis = axis % np.ndim(v)
        g = np.reshape(g, tuple(np.shape(v)[axis] if i == axis else 1 for i in range(np.ndim(v))))
    tv, tg = _t(v, dw is not None), _t(np.reshape(g, ()) if axis is None else g, dw is not None)
    w = torch._weight_norm(tv, tg, -1 if axis is None else axis)
    if dw is None:
        return w.detach().numpy()
    w.backward(_t(dw))
    return tv.grad.numpy(), tg.grad.numpy().reshape(gshape)


def torch_cosine_linear(x, w, *, eps=1e-8, dy=None):
    import torch.nn.functional as F

    tx, tw = _t(x, dy is not None), _t(w, dy is not None)
    y = F.cosine_similarity(tx[..., None, :], tw, dim=-1, eps=eps)
    if dy is None:
        return y.detach().numpy()
    y.backward(_t(dy))
    return tx.grad.numpy(), tw.grad.numpy()
