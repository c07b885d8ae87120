"""Benchmark ops of fastnorm.optim for ``python -m fastnorm bench`` and asv_bench.

A case's shape is (tensors, elements per tensor): (1, 32M) is one large tensor, (256, 128k)
a model of many mid-sized ones. Each implementation steps its own copy of the params (built
when the call is prepared; the first, untimed call creates the optimizer state), so every
call is one optimizer step over all the tensors and the first call of each agrees with the
others. Bytes per element: Adam reads param, grad, exp_avg, exp_avg_sq and writes param,
exp_avg, exp_avg_sq (7 x 4 = 28 for float32); SGD with momentum reads param, grad, buffer and
writes param, buffer (20).
"""

import numpy as np

from . import core as bench
from .. import optim

SHAPES = ((1, 1 << 20), (1, 32 << 20), (256, 128 << 10))
QUICK_SHAPES = ((1, 4096), (16, 1024))

ADAM = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
SGD = dict(lr=1e-2, momentum=0.9)


def _make(shape, dtype, rng):
    count, n = shape
    return {"params": [rng.standard_normal(n, dtype=dtype) for _ in range(count)],
            "grads": [rng.standard_normal(n, dtype=dtype) for _ in range(count)]}


def _nbytes(arrays_moved):
    def nbytes(inp):
        return arrays_moved * sum(p.nbytes for p in inp["params"])

    return nbytes


def _fastnorm(cls, kw):
    def prepare(inp):
        params = [p.copy() for p in inp["params"]]
        opt = cls(params, **kw)
        grads = inp["grads"]

        def call():
            opt.step(grads)
            return tuple(params)

        return call

    return prepare


def _torch(name, kw, **flags):
    def prepare(inp, threads):
        torch = bench._torch(threads)
        params = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in inp["params"]]
        for p, g in zip(params, inp["grads"]):
            p.grad = torch.from_numpy(g)
        opt = getattr(torch.optim, name)(params, **kw, **flags)

        def call():
            opt.step()
            return tuple(p.detach() for p in params)

        return call

    return prepare


def _numpy_adam(inp, threads):
    """Adam with NumPy's in-place ufuncs, one tensor after another (torch's formula)."""
    params = [p.copy() for p in inp["params"]]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    tmp = [np.empty_like(p) for p in params]
    state = {"step": 0}
    lr, (b1, b2), eps = ADAM["lr"], ADAM["betas"], ADAM["eps"]

    def call():
        state["step"] += 1
        t = state["step"]
        step_size = lr / (1 - b1 ** t)
        bc2 = (1 - b2 ** t) ** 0.5
        for p, g, a, s, d in zip(params, inp["grads"], m, v, tmp):
            a *= b1
            a += (1 - b1) * g
            s *= b2
            np.multiply(g, g, out=d)
            d *= 1 - b2
            s += d
            np.sqrt(s, out=d)
            d /= bc2
            d += eps
            np.divide(a, d, out=d)
            d *= -step_size
            p += d
        return tuple(params)

    return call


def _numpy_sgd(inp, threads):
    params = [p.copy() for p in inp["params"]]
    bufs = [None] * len(params)
    lr, mom = SGD["lr"], SGD["momentum"]

    def call():
        for k, (p, g) in enumerate(zip(params, inp["grads"])):
            if bufs[k] is None:
                bufs[k] = g.copy()
            else:
                bufs[k] *= mom
                bufs[k] += g
            p -= lr * bufs[k]
        return tuple(params)

    return call


bench.register(bench.Op(
    "adam_step", _make, _fastnorm(optim.Adam, ADAM), _nbytes(7),
    {"numpy": _numpy_adam, "torch": _torch("Adam", ADAM, fused=True)},
    shapes=SHAPES, quick_shapes=QUICK_SHAPES))
bench.register(bench.Op(
    "adam_step_vs_foreach", _make, _fastnorm(optim.Adam, ADAM), _nbytes(7),
    {"numpy": _numpy_adam, "torch": _torch("Adam", ADAM, foreach=True)},
    shapes=SHAPES[1:], quick_shapes=QUICK_SHAPES[1:]))
bench.register(bench.Op(
    "sgd_momentum_step", _make, _fastnorm(optim.SGD, SGD), _nbytes(5),
    {"numpy": _numpy_sgd, "torch": _torch("SGD", SGD, fused=True)},
    shapes=SHAPES, quick_shapes=QUICK_SHAPES))
