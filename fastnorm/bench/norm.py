"""Benchmark ops of fastnorm.ops.norm (registered in ``fastnorm.bench`` when it imports this module):
layer_norm and rms_norm, forward and backward, on rows of the default ``ROW_SHAPES`` (per-call
latency (1, 768) up to the headline (32768, 1024)). Baselines: NumPy, PyTorch
(``torch.nn.functional``; autograd for backwards) and ONNX Runtime (LayerNormalization,
RMSNormalization) for forwards."""
from functools import partial

import numpy as np

import fastnorm.functional as fn
from .core import Op, _nbytes, _torch, onnx_model, onnx_session, register


def _row_inputs(center, backward):
    """make_inputs for layer_norm (center) / rms_norm, forward or backward, rows of (m, n).

    Backward inputs carry ``stats`` from fastnorm's forward, in the API's form: (mean, invstd)
    for layer_norm, invrms for rms_norm. Every implementation is handed them, as a training
    step hands its backward the statistics saved by its forward."""

    def make(shape, dtype, rng):
        n = shape[-1]
        inp = {"x": rng.standard_normal(shape, dtype=dtype),
               "weight": 1 + 0.1 * rng.standard_normal(n, dtype=dtype),
               "eps": 1e-5 if center else 1e-6}
        if center:
            inp["bias"] = 0.1 * rng.standard_normal(n, dtype=dtype)
        if backward:
            inp["dy"] = rng.standard_normal(shape, dtype=dtype)
            if center:
                _, mean, invstd = fn.layer_norm(inp["x"], eps=inp["eps"], return_stats=True)
                inp["stats"] = (mean, invstd)
            else:
                inp["stats"] = fn.rms_norm(inp["x"], eps=inp["eps"], return_stats=True)[1]
        return inp

    return make


def _params(inp):
    """(weight, bias) or (weight,) of a row op's inputs."""
    return (inp["weight"], inp["bias"]) if "bias" in inp else (inp["weight"],)


def _fastnorm_forward(func):
    def prepare(inp):
        return partial(func, inp["x"], *_params(inp), eps=inp["eps"], out=np.empty_like(inp["x"]))

    return prepare


def _fastnorm_backward(func):
    def prepare(inp):
        return partial(func, inp["dy"], inp["x"], *_params(inp), eps=inp["eps"],
                       stats=inp["stats"], out=np.empty_like(inp["x"]))

    return prepare


# NumPy baselines: vectorized NumPy in the input's dtype, with out= where it saves a pass.

def _numpy_layer_norm(inp, threads):
    x, w, b, eps = inp["x"], inp["weight"], inp["bias"], inp["eps"]
    y = np.empty_like(x)

    def call():
        xc = np.subtract(x, x.mean(axis=-1, keepdims=True), out=y)
        xc *= 1 / np.sqrt(np.square(xc).mean(axis=-1, keepdims=True) + eps)
        xc *= w
        xc += b
        return xc

    return call


def _numpy_layer_norm_backward(inp, threads):
    dy, x, w = inp["dy"], inp["x"], inp["weight"]
    mean, invstd = (s.astype(x.dtype)[:, None] for s in inp["stats"])
    dx = np.empty_like(x)

    def call():
        xhat = (x - mean) * invstd
        g = dy * w
        c1 = g.mean(axis=-1, keepdims=True)
        c2 = (g * xhat).mean(axis=-1, keepdims=True)
        np.multiply(g - c1 - xhat * c2, invstd, out=dx)
        return dx, (dy * xhat).sum(axis=0), dy.sum(axis=0)

    return call


def _numpy_rms_norm(inp, threads):
    x, w, eps = inp["x"], inp["weight"], inp["eps"]
    y = np.empty_like(x)

    def call():
        xn = np.multiply(x, 1 / np.sqrt(np.square(x).mean(axis=-1, keepdims=True) + eps), out=y)
        xn *= w
        return xn

    return call


def _numpy_rms_norm_backward(inp, threads):
    dy, x, w = inp["dy"], inp["x"], inp["weight"]
    invrms = inp["stats"].astype(x.dtype)[:, None]
    dx = np.empty_like(x)

    def call():
        xhat = x * invrms
        g = dy * w
        np.multiply(g - xhat * (g * xhat).mean(axis=-1, keepdims=True), invrms, out=dx)
        return dx, (dy * xhat).sum(axis=0)

    return call


# PyTorch baselines: torch.nn.functional on tensors sharing the inputs' memory; backward is
# autograd's backward alone (the graph is built once, kept with retain_graph).

def _torch_forward(name):
    def prepare(inp, threads):
        torch = _torch(threads)
        x = torch.from_numpy(inp["x"])
        params = [torch.from_numpy(p) for p in _params(inp)]
        return partial(getattr(torch.nn.functional, name), x, x.shape[-1:], *params, inp["eps"])

    return prepare


def _torch_backward(name):
    def prepare(inp, threads):
        torch = _torch(threads)
        leaves = [torch.from_numpy(a).requires_grad_() for a in (inp["x"], *_params(inp))]
        y = getattr(torch.nn.functional, name)(leaves[0], leaves[0].shape[-1:], *leaves[1:], inp["eps"])
        return partial(torch.autograd.grad, y, leaves, torch.from_numpy(inp["dy"]), retain_graph=True)

    return prepare


# ONNX Runtime baselines (forward only: it has no training kernels in its inference build).

def _ort_forward(op_type, opset):
    def prepare(inp, threads):
        feeds = dict(zip(("X", "Scale", "B"), (inp["x"], *_params(inp))))
        model = onnx_model(op_type, opset, feeds, axis=-1, epsilon=inp["eps"])
        return partial(onnx_session(model, threads).run, None, feeds)

    return prepare


register(Op(
    "layer_norm", _row_inputs(True, False), _fastnorm_forward(fn.layer_norm),
    _nbytes("x", "x", "weight", "bias"),
    {"numpy": _numpy_layer_norm, "torch": _torch_forward("layer_norm"),
     "onnxruntime": _ort_forward("LayerNormalization", 17)}))
register(Op(
    "layer_norm_backward", _row_inputs(True, True), _fastnorm_backward(fn.layer_norm_backward),
    _nbytes("dy", "x", "x", "weight", "weight", "bias", "stats"),
    {"numpy": _numpy_layer_norm_backward, "torch": _torch_backward("layer_norm")}))
register(Op(
    "rms_norm", _row_inputs(False, False), _fastnorm_forward(fn.rms_norm),
    _nbytes("x", "x", "weight"),
    {"numpy": _numpy_rms_norm, "torch": _torch_forward("rms_norm"),
     "onnxruntime": _ort_forward("RMSNormalization", 23)}))
register(Op(
    "rms_norm_backward", _row_inputs(False, True), _fastnorm_backward(fn.rms_norm_backward),
    _nbytes("dy", "x", "x", "weight", "weight", "stats"),
    {"numpy": _numpy_rms_norm_backward, "torch": _torch_backward("rms_norm")}))
