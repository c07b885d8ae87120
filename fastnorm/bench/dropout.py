"""Benchmark ops of the dropout group (``python -m fastnorm bench`` rows, asv_bench reuses them).

Random ops cannot be compared elementwise across generators, and dropout's time does not depend
on the values it multiplies: the inputs are zeros (x, dy), so every implementation returns zeros
and the registry's generic elementwise check holds; tests/test_bench.py checks each baseline by
law (values in {0, x / (1 - p)}, keep rate 1 - p) on random data with the same callables.
"""
from functools import partial

import numpy as np

from . import core as bench
from ..ops.dropout import dropout, dropout_backward, gaussian_dropout

P = 0.5
SHAPES = ((1, 768), (512, 1024), (16384, 1024))
SEED = 1234


def _inputs(backward):
    def make(shape, dtype, rng):
        inp = {"x": np.zeros(shape, dtype), "p": P, "seed": SEED}
        if backward:
            inp["dy"] = np.zeros(shape, dtype)
        return inp

    return make


def _fastnorm_forward(func):
    def prepare(inp):
        return partial(func, inp["x"], inp["p"], seed=inp["seed"], out=np.empty_like(inp["x"]))

    return prepare


def _fastnorm_backward(inp):
    return partial(dropout_backward, inp["dy"], inp["p"], inp["seed"], out=np.empty_like(inp["dy"]))


def _numpy_dropout(inp, threads):
    x, p = inp["x"], inp["p"]
    rng = np.random.default_rng(inp["seed"])
    y = np.empty_like(x)

    def call():
        keep = rng.random(x.shape, dtype=x.dtype) >= p
        return np.multiply(x, keep * x.dtype.type(1 / (1 - p)), out=y)

    return call


def _numpy_dropout_backward(inp, threads):
    dy, p = inp["dy"], inp["p"]
    # the mask a NumPy forward would have stored, one byte per element
    keep = np.random.default_rng(inp["seed"]).random(dy.shape) >= p
    scale = dy.dtype.type(1 / (1 - p))
    dx = np.empty_like(dy)

    def call():
        out = np.multiply(dy, keep, out=dx)
        out *= scale
        return out

    return call


def _numpy_gaussian_dropout(inp, threads):
    x, p = inp["x"], inp["p"]
    rng = np.random.default_rng(inp["seed"])
    std = np.sqrt(p / (1 - p))
    y = np.empty_like(x)

    def call():
        noise = rng.standard_normal(x.shape, dtype=x.dtype)
        noise *= x.dtype.type(std)
        noise += 1
        return np.multiply(x, noise, out=y)

    return call


def _torch_dropout(inp, threads):
    torch = bench._torch(threads)
    return partial(torch.nn.functional.dropout, torch.from_numpy(inp["x"]), inp["p"], True)


def _torch_dropout_backward(inp, threads):
    torch = bench._torch(threads)
    x = torch.from_numpy(inp["x"]).requires_grad_()
    y = torch.nn.functional.dropout(x, inp["p"], True)  # autograd keeps its mask
    return partial(torch.autograd.grad, y, [x], torch.from_numpy(inp["dy"]), retain_graph=True)


bench.register(bench.Op(
    "dropout", _inputs(False), _fastnorm_forward(dropout), bench._nbytes("x", "x"),
    {"numpy": _numpy_dropout, "torch": _torch_dropout}, shapes=SHAPES))
bench.register(bench.Op(
    "dropout_backward", _inputs(True), _fastnorm_backward, bench._nbytes("dy", "dy"),
    {"numpy": _numpy_dropout_backward, "torch": _torch_dropout_backward}, shapes=SHAPES))
bench.register(bench.Op(
    "gaussian_dropout", _inputs(False), _fastnorm_forward(gaussian_dropout), bench._nbytes("x", "x"),
    {"numpy": _numpy_gaussian_dropout}, shapes=SHAPES))
