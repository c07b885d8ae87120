"""Benchmark ops of fastnorm.ops.local (registered in fastnorm.bench's registry at import):
local_response_norm, lp_normalize, weight_norm, cosine_linear and their backwards, against
NumPy, PyTorch and (LRN) ONNX Runtime."""
from functools import partial

import numpy as np

import fastnorm.functional as fn

from .core import Op, _nbytes, _torch, onnx_model, onnx_session, register

LRN = dict(size=5, alpha=1e-4, beta=0.75, k=2.0)  # AlexNet's constants
LRN_SHAPES = ((32, 64, 56, 56),)                  # the headline case, 25.7 MB
LRN_QUICK = ((2, 8, 7, 7),)
COS_SHAPES = ((1, 768), (512, 1024), (4096, 1024))  # x (M, K) against w (K, K)
COS_QUICK = ((4, 64),)


def _inputs(*names, g=False):
    def make(shape, dtype, rng):
        inp = {n: rng.standard_normal(shape, dtype=dtype) for n in names}
        if g:
            inp["g"] = (1 + rng.random((shape[0], 1))).astype(dtype)  # torch's weight_g shape
        return inp

    return make


def _cos_inputs(backward):
    def make(shape, dtype, rng):
        inp = {"x": rng.standard_normal(shape, dtype=dtype),
               "w": rng.standard_normal((shape[1], shape[1]), dtype=dtype)}
        if backward:
            inp["dy"] = rng.standard_normal((shape[0], shape[1]), dtype=dtype)
        return inp

    return make


def _out(inp, name="x"):
    return np.empty_like(inp[name])


# ---------------------------------------------------------------- fastnorm calls

def _fn_lrn(inp):
    return partial(fn.local_response_norm, inp["x"], LRN["size"], alpha=LRN["alpha"],
                   beta=LRN["beta"], k=LRN["k"], out=_out(inp))


def _fn_lrn_backward(inp):
    return partial(fn.local_response_norm_backward, inp["dy"], inp["x"], LRN["size"],
                   alpha=LRN["alpha"], beta=LRN["beta"], k=LRN["k"], out=_out(inp))


def _fn_lp(inp):
    return partial(fn.lp_normalize, inp["x"], out=_out(inp))


def _fn_lp_backward(inp):
    return partial(fn.lp_normalize_backward, inp["dy"], inp["x"], out=_out(inp))


def _fn_wn(inp):
    return partial(fn.weight_norm, inp["v"], inp["g"], out=_out(inp, "v"))


def _fn_wn_backward(inp):
    return partial(fn.weight_norm_backward, inp["dw"], inp["v"], inp["g"], out=_out(inp, "v"))


def _fn_cos(inp):
    return partial(fn.cosine_linear, inp["x"], inp["w"])


def _fn_cos_backward(inp):
    return partial(fn.cosine_linear_backward, inp["dy"], inp["x"], inp["w"])


# ---------------------------------------------------------------- NumPy baselines

def _np_lrn_factor(x):
    size, C = LRN["size"], x.shape[1]
    sq = np.zeros((x.shape[0], C + size - 1) + x.shape[2:], x.dtype)
    sq[:, size // 2:size // 2 + C] = x * x
    s = sum(sq[:, j:j + C] for j in range(size))
    return LRN["k"] + LRN["alpha"] / size * s


def _np_lrn(inp, threads):
    x = inp["x"]
    return lambda: x / _np_lrn_factor(x) ** LRN["beta"]


def _np_lrn_backward(inp, threads):
    x, dy = inp["x"], inp["dy"]
    size, C, beta = LRN["size"], x.shape[1], LRN["beta"]

    def call():
        d = _np_lrn_factor(x)
        q = np.zeros((x.shape[0], C + size - 1) + x.shape[2:], x.dtype)
        q[:, (size - 1) // 2:(size - 1) // 2 + C] = dy * x * d ** (-beta - 1)
        t = sum(q[:, j:j + C] for j in range(size))
        return dy * d ** -beta - (2 * LRN["alpha"] * beta / size) * x * t

    return call


def _np_lp(inp, threads):
    x = inp["x"]
    return lambda: x / np.maximum(np.sqrt(np.square(x).sum(-1, keepdims=True)), 1e-12)


def _np_lp_backward(inp, threads):
    x, dy = inp["x"], inp["dy"]

    def call():
        n = np.maximum(np.sqrt(np.square(x).sum(-1, keepdims=True)), 1e-12)
        return dy / n - x * ((dy * x).sum(-1, keepdims=True) / n ** 3)

    return call


def _np_wn(inp, threads):
    v, g = inp["v"], inp["g"]
    return lambda: v * (g / np.sqrt(np.square(v).sum(-1, keepdims=True)))


def _np_wn_backward(inp, threads):
    v, g, dw = inp["v"], inp["g"], inp["dw"]

    def call():
        n = np.sqrt(np.square(v).sum(-1, keepdims=True))
        dg = (dw * v).sum(-1, keepdims=True) / n
        return g / n * dw - (g * dg / n ** 2) * v, dg

    return call


def _np_unit_rows(a):
    return a / np.maximum(np.sqrt(np.square(a).sum(-1, keepdims=True)), 1e-8)


def _np_cos(inp, threads):
    x, w = inp["x"], inp["w"]
    return lambda: _np_unit_rows(x) @ _np_unit_rows(w).T


def _np_cos_backward(inp, threads):
    x, w, dy = inp["x"], inp["w"], inp["dy"]

    def call():
        nx = np.sqrt(np.square(x).sum(-1, keepdims=True))
        nw = np.sqrt(np.square(w).sum(-1, keepdims=True))
        y = (x / nx) @ (w / nw).T
        t = dy * y
        dx = (dy / nw.T) @ w / nx - x * (t.sum(1, keepdims=True) / nx ** 2)
        dw = (dy / nx).T @ x / nw - w * (t.sum(0)[:, None] / nw ** 2)
        return dx, dw

    return call


# ---------------------------------------------------------------- PyTorch baselines

def _t_lrn(inp, threads):
    torch = _torch(threads)
    return partial(torch.nn.functional.local_response_norm, torch.from_numpy(inp["x"]),
                   LRN["size"], LRN["alpha"], LRN["beta"], LRN["k"])


def _grad(torch, y, leaves, dy):
    return partial(torch.autograd.grad, y, leaves, torch.from_numpy(dy), retain_graph=True)


def _t_lrn_backward(inp, threads):
    torch = _torch(threads)
    x = torch.from_numpy(inp["x"]).requires_grad_()
    y = torch.nn.functional.local_response_norm(x, LRN["size"], LRN["alpha"], LRN["beta"], LRN["k"])
    return _grad(torch, y, [x], inp["dy"])


def _t_lp(inp, threads):
    torch = _torch(threads)
    return partial(torch.nn.functional.normalize, torch.from_numpy(inp["x"]), dim=-1)


def _t_lp_backward(inp, threads):
    torch = _torch(threads)
    x = torch.from_numpy(inp["x"]).requires_grad_()
    return _grad(torch, torch.nn.functional.normalize(x, dim=-1), [x], inp["dy"])


def _t_wn(inp, threads):
    torch = _torch(threads)
    return partial(torch._weight_norm, torch.from_numpy(inp["v"]), torch.from_numpy(inp["g"]), 0)


def _t_wn_backward(inp, threads):
    torch = _torch(threads)
    v = torch.from_numpy(inp["v"]).requires_grad_()
    g = torch.from_numpy(inp["g"]).requires_grad_()
    return _grad(torch, torch._weight_norm(v, g, 0), [v, g], inp["dw"])


def _t_cos_y(torch, x, w):
    F = torch.nn.functional
    return F.linear(F.normalize(x, eps=1e-8), F.normalize(w, eps=1e-8))


def _t_cos(inp, threads):
    torch = _torch(threads)
    return partial(_t_cos_y, torch, torch.from_numpy(inp["x"]), torch.from_numpy(inp["w"]))


def _t_cos_backward(inp, threads):
    torch = _torch(threads)
    x = torch.from_numpy(inp["x"]).requires_grad_()
    w = torch.from_numpy(inp["w"]).requires_grad_()
    return _grad(torch, _t_cos_y(torch, x, w), [x, w], inp["dy"])


# ---------------------------------------------------------------- ONNX Runtime

def _ort_lrn(inp, threads):
    feeds = {"X": inp["x"]}
    model = onnx_model("LRN", 13, feeds, size=LRN["size"], alpha=LRN["alpha"], beta=LRN["beta"],
                       bias=LRN["k"])
    return partial(onnx_session(model, threads).run, None, feeds)


register(Op("local_response_norm", _inputs("x"), _fn_lrn, _nbytes("x", "x"),
            {"numpy": _np_lrn, "torch": _t_lrn, "onnxruntime": _ort_lrn},
            shapes=LRN_SHAPES, quick_shapes=LRN_QUICK))
register(Op("local_response_norm_backward", _inputs("x", "dy"), _fn_lrn_backward,
            _nbytes("dy", "x", "x"), {"numpy": _np_lrn_backward, "torch": _t_lrn_backward},
            shapes=LRN_SHAPES, quick_shapes=LRN_QUICK))
register(Op("lp_normalize", _inputs("x"), _fn_lp, _nbytes("x", "x"),
            {"numpy": _np_lp, "torch": _t_lp}))
register(Op("lp_normalize_backward", _inputs("x", "dy"), _fn_lp_backward, _nbytes("dy", "x", "x"),
            {"numpy": _np_lp_backward, "torch": _t_lp_backward}))
register(Op("weight_norm", _inputs("v", g=True), _fn_wn, _nbytes("v", "v", "g"),
            {"numpy": _np_wn, "torch": _t_wn}))
register(Op("weight_norm_backward", _inputs("v", "dw", g=True), _fn_wn_backward,
            _nbytes("dw", "v", "v", "g", "g"), {"numpy": _np_wn_backward, "torch": _t_wn_backward}))
register(Op("cosine_linear", _cos_inputs(False), _fn_cos, _nbytes("x", "w", "x"),
            {"numpy": _np_cos, "torch": _t_cos}, shapes=COS_SHAPES, quick_shapes=COS_QUICK))
register(Op("cosine_linear_backward", _cos_inputs(True), _fn_cos_backward,
            _nbytes("dy", "x", "w", "x", "w"), {"numpy": _np_cos_backward, "torch": _t_cos_backward},
            shapes=COS_SHAPES, quick_shapes=COS_QUICK))
