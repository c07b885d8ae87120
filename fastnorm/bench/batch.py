"""Benchmark ops of fastnorm.ops.batch (registered in ``fastnorm.bench`` when it imports this module):
batch_norm in training and in eval, instance_norm, group_norm (32 groups), each forward and
backward, on NCHW float32 shapes up to the issue's headline (64, 64, 56, 56); batch_norm also
channels-last. Baselines: NumPy, PyTorch (autograd for backwards), ONNX Runtime where it has the
op (BatchNormalization in inference mode, InstanceNormalization)."""
from functools import partial

import numpy as np

import fastnorm.functional as fn
from .core import Op, _nbytes, _torch, onnx_model, onnx_session, register

SHAPES = ((8, 64, 28, 28), (64, 64, 56, 56))
QUICK_SHAPES = ((2, 32, 3, 5),)
GROUPS = 32
EPS = 1e-5


def _inputs(backward, channels_last=False, stats_of=None):
    """x (N, C, *) (or channels-last), per-channel weight/bias/running stats; dy and the
    forward's statistics (``fwd_stats``) for a backward."""

    def make(shape, dtype, rng):
        if channels_last:
            shape = (shape[0], *shape[2:], shape[1])
        C = shape[-1] if channels_last else shape[1]
        inp = {"x": rng.standard_normal(shape, dtype=dtype),
               "weight": (1 + 0.1 * rng.standard_normal(C)).astype(dtype),
               "bias": (0.1 * rng.standard_normal(C)).astype(dtype),
               "running_mean": (0.1 * rng.standard_normal(C)).astype(dtype),
               "running_var": (1 + rng.random(C)).astype(dtype),
               "axis": -1 if channels_last else 1}
        if backward:
            inp["dy"] = rng.standard_normal(shape, dtype=dtype)
            inp["fwd_stats"] = stats_of(inp)
        return inp

    return make


def _bn_stats(inp):
    _, mean, invstd = fn.batch_norm(inp["x"], training=True, axis=inp["axis"], eps=EPS, return_stats=True)
    return mean, invstd


def _in_stats(inp):
    return fn.instance_norm(inp["x"], eps=EPS, return_stats=True)[1:]


def _gn_stats(inp):
    return fn.group_norm(inp["x"], GROUPS, eps=EPS, return_stats=True)[1:]


def _bshape(inp):
    s = [1] * inp["x"].ndim
    s[inp["axis"]] = -1
    return s


# ---------------------------------------------------------------- fastnorm calls


def _fn_bn(training):
    def prepare(inp):
        rm, rv = inp["running_mean"].copy(), inp["running_var"].copy()
        return partial(fn.batch_norm, inp["x"], rm, rv, inp["weight"], inp["bias"], training=training,
                       eps=EPS, axis=inp["axis"], out=np.empty_like(inp["x"]))

    return prepare


def _fn_bn_backward(inp):
    return partial(fn.batch_norm_backward, inp["dy"], inp["x"], None, None, inp["weight"], inp["bias"],
                   training=True, eps=EPS, axis=inp["axis"], stats=inp["fwd_stats"],
                   out=np.empty_like(inp["x"]))


def _fn_in(inp):
    return partial(fn.instance_norm, inp["x"], inp["weight"], inp["bias"], eps=EPS,
                   out=np.empty_like(inp["x"]))


def _fn_in_backward(inp):
    return partial(fn.instance_norm_backward, inp["dy"], inp["x"], inp["weight"], inp["bias"], eps=EPS,
                   stats=inp["fwd_stats"], out=np.empty_like(inp["x"]))


def _fn_gn(inp):
    return partial(fn.group_norm, inp["x"], GROUPS, inp["weight"], inp["bias"], eps=EPS,
                   out=np.empty_like(inp["x"]))


def _fn_gn_backward(inp):
    return partial(fn.group_norm_backward, inp["dy"], inp["x"], GROUPS, inp["weight"], inp["bias"],
                   eps=EPS, stats=inp["fwd_stats"], out=np.empty_like(inp["x"]))


# ---------------------------------------------------------------- NumPy baselines (input dtype)


def _np_norm(x, red, w, b, bshape, mean=None, var=None):
    if mean is None:
        mean = x.mean(axis=red, keepdims=True)
        var = np.square(x - mean).mean(axis=red, keepdims=True)
    y = (x - mean) * (1 / np.sqrt(var + EPS))
    return y * w.reshape(bshape) + b.reshape(bshape)


def _np_bn(training):
    def prepare(inp, threads):
        x, axis = inp["x"], inp["axis"] % inp["x"].ndim
        red = tuple(a for a in range(x.ndim) if a != axis)
        bs = _bshape(inp)
        if training:
            return partial(_np_norm, x, red, inp["weight"], inp["bias"], bs)
        return partial(_np_norm, x, red, inp["weight"], inp["bias"], bs,
                       inp["running_mean"].reshape(bs), inp["running_var"].reshape(bs))

    return prepare


def _np_grads(dy, x, red, w, mean, invstd, bshape, sum_axes):
    xhat = (x - mean) * invstd
    g = dy * w.reshape(bshape)
    dx = invstd * (g - g.mean(axis=red, keepdims=True) - xhat * (g * xhat).mean(axis=red, keepdims=True))
    return dx, (dy * xhat).sum(axis=sum_axes), dy.sum(axis=sum_axes)


def _np_bn_backward(inp, threads):
    x, axis = inp["x"], inp["axis"] % inp["x"].ndim
    red = tuple(a for a in range(x.ndim) if a != axis)
    bs = _bshape(inp)
    mean, invstd = (s.astype(x.dtype).reshape(bs) for s in inp["fwd_stats"])
    return partial(_np_grads, inp["dy"], x, red, inp["weight"], mean, invstd, bs, red)


def _np_in(inp, threads):
    x = inp["x"]
    red = tuple(range(2, x.ndim))
    return partial(_np_norm, x, red, inp["weight"], inp["bias"], _bshape(inp))


def _np_in_backward(inp, threads):
    x = inp["x"]
    red = tuple(range(2, x.ndim))
    ss = x.shape[:2] + (1,) * (x.ndim - 2)
    mean, invstd = (s.astype(x.dtype).reshape(ss) for s in inp["fwd_stats"])
    return partial(_np_grads, inp["dy"], x, red, inp["weight"], mean, invstd, _bshape(inp), (0,) + red)


def _np_gn(inp, threads):
    x, w, b = inp["x"], inp["weight"], inp["bias"]
    bs = _bshape(inp)

    def call():
        xg = x.reshape(x.shape[0], GROUPS, -1)
        mean = xg.mean(axis=2, keepdims=True)
        y = (xg - mean) * (1 / np.sqrt(np.square(xg - mean).mean(axis=2, keepdims=True) + EPS))
        return y.reshape(x.shape) * w.reshape(bs) + b.reshape(bs)

    return call


def _np_gn_backward(inp, threads):
    dy, x, w = inp["dy"], inp["x"], inp["weight"]
    N = x.shape[0]
    bs = _bshape(inp)
    mean, invstd = (s.astype(x.dtype).reshape(N, GROUPS, 1) for s in inp["fwd_stats"])

    def call():
        xhat = ((x.reshape(N, GROUPS, -1) - mean) * invstd)
        g = (dy * w.reshape(bs)).reshape(xhat.shape)
        dx = invstd * (g - g.mean(axis=2, keepdims=True) - xhat * (g * xhat).mean(axis=2, keepdims=True))
        sum_axes = (0,) + tuple(range(2, x.ndim))
        return dx.reshape(x.shape), (dy * xhat.reshape(x.shape)).sum(axis=sum_axes), dy.sum(axis=sum_axes)

    return call


# ---------------------------------------------------------------- PyTorch baselines


def _torch_args(inp, torch):
    return [torch.from_numpy(inp[k]) for k in ("weight", "bias")]


def _torch_x(inp, torch, grad=False):
    """x as an NCHW tensor (channels-last data: a channels_last-strided view, no copy)."""
    x = torch.from_numpy(inp["x"])
    if inp["axis"] % inp["x"].ndim != 1:
        x = x.movedim(-1, 1)
    return x.requires_grad_() if grad else x


def _torch_bn(training):
    def prepare(inp, threads):
        torch = _torch(threads)
        x = _torch_x(inp, torch)
        rm, rv = (torch.from_numpy(inp[k].copy()) for k in ("running_mean", "running_var"))
        w, b = _torch_args(inp, torch)
        f = partial(torch.nn.functional.batch_norm, x, rm, rv, w, b, training, 0.1, EPS)
        if inp["axis"] % inp["x"].ndim == 1:
            return f
        return lambda: f().movedim(1, -1)

    return prepare


def _torch_backward(forward):
    def prepare(inp, threads):
        torch = _torch(threads)
        x = _torch_x(inp, torch, grad=True)
        w, b = (t.requires_grad_() for t in _torch_args(inp, torch))
        y = forward(torch, x, w, b)
        dy = torch.from_numpy(inp["dy"])
        if inp["axis"] % inp["x"].ndim != 1:
            dy = dy.movedim(-1, 1)
        grad = partial(torch.autograd.grad, y, (x, w, b), dy, retain_graph=True)
        if inp["axis"] % inp["x"].ndim == 1:
            return grad
        return lambda: (lambda g: (g[0].movedim(1, -1), g[1], g[2]))(grad())

    return prepare


def _torch_in(inp, threads):
    torch = _torch(threads)
    return partial(torch.nn.functional.instance_norm, torch.from_numpy(inp["x"]), None, None,
                   *_torch_args(inp, torch), True, 0.1, EPS)


def _torch_gn(inp, threads):
    torch = _torch(threads)
    return partial(torch.nn.functional.group_norm, torch.from_numpy(inp["x"]), GROUPS,
                   *_torch_args(inp, torch), EPS)


# ---------------------------------------------------------------- ONNX Runtime baselines


def _ort_bn_eval(inp, threads):
    feeds = {"X": inp["x"], "scale": inp["weight"], "B": inp["bias"],
             "input_mean": inp["running_mean"], "input_var": inp["running_var"]}
    model = onnx_model("BatchNormalization", 15, feeds, epsilon=EPS)
    return partial(onnx_session(model, threads).run, None, feeds)


def _ort_in(inp, threads):
    feeds = {"X": inp["x"], "scale": inp["weight"], "B": inp["bias"]}
    model = onnx_model("InstanceNormalization", 17, feeds, epsilon=EPS)
    return partial(onnx_session(model, threads).run, None, feeds)


# ---------------------------------------------------------------- registration


def _op(name, make, call, nbytes, baselines):
    return register(Op(name, make, call, nbytes, baselines, shapes=SHAPES, quick_shapes=QUICK_SHAPES))


_FWD_BYTES = _nbytes("x", "x")                  # read x, write y
_BWD_BYTES = _nbytes("dy", "x", "x")            # read dy and x, write dx

_op("batch_norm", _inputs(False), _fn_bn(True), _FWD_BYTES,
    {"numpy": _np_bn(True), "torch": _torch_bn(True)})
_op("batch_norm_eval", _inputs(False), _fn_bn(False), _FWD_BYTES,
    {"numpy": _np_bn(False), "torch": _torch_bn(False), "onnxruntime": _ort_bn_eval})
_op("batch_norm_backward", _inputs(True, stats_of=_bn_stats), _fn_bn_backward, _BWD_BYTES,
    {"numpy": _np_bn_backward,
     "torch": _torch_backward(lambda torch, x, w, b: torch.nn.functional.batch_norm(
         x, None, None, w, b, True, 0.1, EPS))})
_op("batch_norm_channels_last", _inputs(False, channels_last=True), _fn_bn(True), _FWD_BYTES,
    {"numpy": _np_bn(True), "torch": _torch_bn(True)})
_op("batch_norm_channels_last_backward", _inputs(True, channels_last=True, stats_of=_bn_stats),
    _fn_bn_backward, _BWD_BYTES,
    {"numpy": _np_bn_backward,
     "torch": _torch_backward(lambda torch, x, w, b: torch.nn.functional.batch_norm(
         x, None, None, w, b, True, 0.1, EPS))})
_op("instance_norm", _inputs(False), _fn_in, _FWD_BYTES,
    {"numpy": _np_in, "torch": _torch_in, "onnxruntime": _ort_in})
_op("instance_norm_backward", _inputs(True, stats_of=_in_stats), _fn_in_backward, _BWD_BYTES,
    {"numpy": _np_in_backward,
     "torch": _torch_backward(lambda torch, x, w, b: torch.nn.functional.instance_norm(
         x, None, None, w, b, True, 0.1, EPS))})
_op("group_norm", _inputs(False), _fn_gn, _FWD_BYTES, {"numpy": _np_gn, "torch": _torch_gn})
_op("group_norm_backward", _inputs(True, stats_of=_gn_stats), _fn_gn_backward, _BWD_BYTES,
    {"numpy": _np_gn_backward,
     "torch": _torch_backward(lambda torch, x, w, b: torch.nn.functional.group_norm(
         x, GROUPS, w, b, EPS))})
