"""Benchmark ops of the divergence group (registered when fastnorm.bench imports this module).

- ``kl_div``: D(p || q) over the rows of (m, n) float32 distributions (unnormalized, as
  ``scipy.stats.entropy(p, q, axis=-1)`` takes them). PyTorch baseline: the same computation,
  ``pn = p / p.sum(-1); qn = q / q.sum(-1); torch.special.xlogy(pn, pn / qn).sum(-1)``
  (xlogy gives 0 log 0 = 0 and inf where q = 0 < p, like SciPy's rel_entr).
- ``softmax_cross_entropy+backward``: the forward then the backward call on (N, C) logits and
  int64 labels, reduction='mean'; baseline torch ``F.cross_entropy`` forward + autograd backward.
- ``softmax_cross_entropy(return_grad)``: the same loss and gradient from one fused call.
- ``log_softmax``: rows; baselines ``torch.log_softmax`` and ONNX Runtime's LogSoftmax (opset 13).
"""
from functools import partial

import numpy as np

import fastnorm.functional as fn
from .core import Op, _torch, onnx_model, onnx_session, register

SHAPES = ((1, 1000), (512, 1000), (8192, 1000), (32768, 1000))
QUICK = ((1, 1000), (64, 1000))


def _dists(shape, dtype, rng):
    p = rng.random(shape, dtype=dtype)
    q = rng.random(shape, dtype=dtype)
    return {"p": p, "q": q}


def _logits(shape, dtype, rng):
    return {"x": (3 * rng.standard_normal(shape, dtype=dtype)),
            "labels": rng.integers(0, shape[-1], shape[0])}


def _numpy_kl(inp, threads):
    p, q = inp["p"], inp["q"]

    def call():
        pn = p / p.sum(-1, keepdims=True)
        qn = q / q.sum(-1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(pn > 0, pn * np.log(pn / qn), 0).sum(-1)

    return call


def _torch_kl(inp, threads):
    torch = _torch(threads)
    p, q = torch.from_numpy(inp["p"]), torch.from_numpy(inp["q"])

    def call():
        pn = p / p.sum(-1, keepdim=True)
        qn = q / q.sum(-1, keepdim=True)
        return torch.special.xlogy(pn, pn / qn).sum(-1)

    return call


def _numpy_sce(inp, threads):
    x, lab = inp["x"], inp["labels"]
    rows = np.arange(x.shape[0])

    def call():
        mx = x.max(-1, keepdims=True)
        e = np.exp(x - mx)
        s = e.sum(-1, keepdims=True)
        loss = (np.log(s[:, 0]) + mx[:, 0] - x[rows, lab]).mean()
        g = e / s
        g[rows, lab] -= 1
        g /= x.shape[0]
        return loss, g

    return call


def _torch_sce(inp, threads):
    torch = _torch(threads)
    x = torch.from_numpy(inp["x"]).requires_grad_()
    lab = torch.from_numpy(inp["labels"])

    def call():
        loss = torch.nn.functional.cross_entropy(x, lab)
        (g,) = torch.autograd.grad(loss, x)
        return loss, g

    return call


def _fastnorm_sce_separate(inp):
    x, lab = inp["x"], inp["labels"]
    out = np.empty_like(x)

    def call():
        loss = fn.softmax_cross_entropy(x, lab)
        return loss, fn.softmax_cross_entropy_backward(1.0, x, lab, out=out)

    return call


def _numpy_log_softmax(inp, threads):
    x = inp["x"]

    def call():
        mx = x.max(-1, keepdims=True)
        return x - mx - np.log(np.exp(x - mx).sum(-1, keepdims=True))

    return call


def _torch_log_softmax(inp, threads):
    torch = _torch(threads)
    return partial(torch.log_softmax, torch.from_numpy(inp["x"]), -1)


def _ort_log_softmax(inp, threads):
    feeds = {"X": inp["x"]}
    return partial(onnx_session(onnx_model("LogSoftmax", 13, feeds, axis=-1), threads).run, None, feeds)


register(Op(
    "kl_div", _dists, lambda inp: partial(fn.kl_div, inp["p"], inp["q"]),
    lambda inp: inp["p"].nbytes + inp["q"].nbytes,
    {"numpy": _numpy_kl, "torch": _torch_kl}, shapes=SHAPES, quick_shapes=QUICK))
register(Op(
    "softmax_cross_entropy+backward", _logits, _fastnorm_sce_separate,
    lambda inp: 2 * inp["x"].nbytes,
    {"numpy": _numpy_sce, "torch": _torch_sce}, shapes=SHAPES, quick_shapes=QUICK))
register(Op(
    "softmax_cross_entropy(return_grad)", _logits,
    lambda inp: partial(fn.softmax_cross_entropy, inp["x"], inp["labels"], return_grad=True),
    lambda inp: 2 * inp["x"].nbytes,
    {"numpy": _numpy_sce, "torch": _torch_sce}, shapes=SHAPES, quick_shapes=QUICK))
register(Op(
    "log_softmax", _logits,
    lambda inp: partial(fn.log_softmax, inp["x"], out=np.empty_like(inp["x"])),
    lambda inp: 2 * inp["x"].nbytes,
    {"numpy": _numpy_log_softmax, "torch": _torch_log_softmax, "onnxruntime": _ort_log_softmax}, shapes=SHAPES, quick_shapes=QUICK))
