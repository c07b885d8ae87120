"""batch_norm, instance_norm, group_norm (forward, backward), moments, fold_batch_norm: against
the float64 reference and PyTorch, on both CPU backends; determinism, layouts, bad inputs."""
import numpy as np
import pytest
import torch

import fastnorm
import fastnorm.functional as fn
from fastnorm import _dispatch

import reference_batch as ref

TOL = {np.dtype(np.float32): 2e-5, np.dtype(np.float64): 1e-11}
# above both parallel thresholds (numba's is 2^19 elements); H*W = 528 >= COLUMN_INNER
BIG = (16, 8, 66, 64)
assert np.prod(BIG) > _dispatch.NUMBA_PARALLEL_MIN_WORK


def close(a, b, dtype, scale=1.0):
    if b is None:
        assert a is None
        return
    t = TOL[np.dtype(dtype)] * scale
    np.testing.assert_allclose(a, b, rtol=t, atol=t * max(1.0, np.abs(b).max(initial=0)))


def bitwise(a, b):
    if a is None or b is None:
        assert a is None and b is None
        return
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape
    u = f"u{a.dtype.itemsize}"
    assert (np.ascontiguousarray(a).view(u) == np.ascontiguousarray(b).view(u)).all()


def data(shape, dtype, seed=0, offset=0.0):
    rng = np.random.default_rng(seed)
    x = (offset + 2 * rng.standard_normal(shape) + 0.5).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    return x, dy, rng


def params(C, dtype, rng, affine):
    if not affine:
        return None, None
    return (1 + 0.3 * rng.standard_normal(C)).astype(dtype), (0.2 * rng.standard_normal(C)).astype(dtype)


# ---------------------------------------------------------------- batch_norm


BN_CASES = [((6, 5), 1), ((4, 3, 40), 1), ((3, 4, 5, 7), 1), ((2, 3, 4, 5, 6), 1),
            ((3, 5, 6, 4), -1), ((4, 6, 3), 2), ((2, 3, 2, 5), 2)]


@pytest.mark.parametrize("shape,axis", BN_CASES)
@pytest.mark.parametrize("mode", ["train", "eval", "train_no_running"])
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_matches_reference_and_torch(backend, dtype, shape, axis, mode, affine):
    x, dy, rng = data(shape, dtype)
    C = shape[axis]
    w, b = params(C, dtype, rng, affine)
    running = mode != "train_no_running"
    rm = (0.1 * rng.standard_normal(C)).astype(dtype) if running else None
    rv = (1 + rng.random(C)).astype(dtype) if running else None
    training = mode != "eval"
    kw = dict(training=training, momentum=0.3, eps=1e-4, axis=axis)
    want, want_rm, want_rv = ref.batch_norm(x, rm, rv, w, b, **kw)
    t_y, t_rm, t_rv = ref.torch_batch_norm(x, None if rm is None else rm.copy(),
                                           None if rv is None else rv.copy(), w, b, **kw)
    rm0 = None if rm is None else rm.copy()
    y, mean, invstd = fn.batch_norm(x, rm, rv, w, b, return_stats=True, **kw)
    assert y.dtype == dtype and y.shape == x.shape and mean.shape == (C,)
    close(y, want, dtype)
    close(y, t_y, dtype, 10)
    if running:
        close(rm, want_rm, dtype)
        close(rv, want_rv, dtype)
        close(rm, t_rm, dtype, 10)
        close(rv, t_rv, dtype, 10)
        if not training:
            bitwise(rm, rm0)  # eval leaves running stats alone


@pytest.mark.parametrize("shape,axis", BN_CASES)
@pytest.mark.parametrize("mode", ["train", "eval", "train_no_running"])
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_backward_matches_reference_and_torch(backend, dtype, shape, axis, mode, affine):
    x, dy, rng = data(shape, dtype, seed=1)
    C = shape[axis]
    w, b = params(C, dtype, rng, affine)
    running = mode != "train_no_running"
    rm = (0.1 * rng.standard_normal(C)).astype(dtype) if running else None
    rv = (1 + rng.random(C)).astype(dtype) if running else None
    kw = dict(training=mode != "eval", eps=1e-4, axis=axis)
    got = fn.batch_norm_backward(dy, x, rm, rv, w, b, **kw)
    want = ref.batch_norm_backward(dy, x, rm, rv, w, b, **kw)
    theirs = ref.torch_batch_norm_backward(dy, x, rm, rv, w, b, **kw)
    for g, r, t in zip(got, want, theirs):
        close(g, r, dtype, 10)
        close(g, t, dtype, 50)
    # the forward's statistics handed back give the same bits
    _, mean, invstd = fn.batch_norm(x, None if rm is None else rm.copy(),
                                    None if rv is None else rv.copy(), w, b,
                                    return_stats=True, momentum=0.0, **kw)
    again = fn.batch_norm_backward(dy, x, rm, rv, w, b, stats=(mean, invstd), **kw)
    for g, a in zip(got, again):
        bitwise(g, a)


def test_momentum_none_is_a_cumulative_average(backend):
    x, _, _ = data((5, 3, 4), np.float64)
    rm, rv = np.zeros(3), np.ones(3)
    nbt = np.zeros((), np.int64)
    means, vars_ = [], []
    for k in range(1, 4):
        xk = x * k + k
        nbt += 1
        fn.batch_norm(xk, rm, rv, training=True, momentum=None, num_batches_tracked=nbt)
        means.append(xk.mean(axis=(0, 2)))
        vars_.append(xk.var(axis=(0, 2), ddof=1))
        # the cumulative average of the batches seen (running_var starts at 1 and is replaced)
        np.testing.assert_allclose(rm, np.mean(means, axis=0), rtol=1e-12)
        np.testing.assert_allclose(rv, np.mean(vars_, axis=0), rtol=1e-12)
    with pytest.raises(ValueError, match="num_batches_tracked"):
        fn.batch_norm(x, rm, rv, training=True, momentum=None)


def test_single_value_per_channel_in_training_raises(backend):
    x = np.ones((1, 3), np.float32)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        fn.batch_norm(x, np.zeros(3, np.float32), np.ones(3, np.float32), training=True)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        fn.batch_norm(np.ones((1, 3, 1, 1)), training=True)
    with torch.no_grad(), pytest.raises(ValueError, match="more than 1 value per channel"):
        torch.nn.functional.batch_norm(torch.ones(1, 3), None, None, training=True)
    # eval with running stats is fine
    fn.batch_norm(x, np.zeros(3, np.float32), np.ones(3, np.float32))
    with pytest.raises(ValueError, match="more than 1 spatial element"):
        fn.instance_norm(np.ones((2, 3, 1)))


# ---------------------------------------------------------------- instance_norm, group_norm


IN_SHAPES = [(2, 3, 7), (3, 2, 5, 6), (2, 2, 3, 4, 5), (2, 3, 4100)]


@pytest.mark.parametrize("shape", IN_SHAPES)
@pytest.mark.parametrize("mode", ["train", "train_running", "eval_running"])
@pytest.mark.parametrize("affine", [True, False])
def test_instance_norm_matches_reference_and_torch(backend, dtype, shape, mode, affine):
    x, dy, rng = data(shape, dtype, seed=2)
    C = shape[1]
    w, b = params(C, dtype, rng, affine)
    running = mode != "train"
    rm = (0.1 * rng.standard_normal(C)).astype(dtype) if running else None
    rv = (1 + rng.random(C)).astype(dtype) if running else None
    kw = dict(training=mode.startswith("train"), eps=1e-4)
    want, want_rm, want_rv = ref.instance_norm(x, w, b, rm, rv, momentum=0.2, **kw)
    t_y, t_rm, t_rv = ref.torch_instance_norm(x, w, b, None if rm is None else rm.copy(),
                                              None if rv is None else rv.copy(), momentum=0.2, **kw)
    rm0, rv0 = (None, None) if rm is None else (rm.copy(), rv.copy())
    y = fn.instance_norm(x, w, b, rm, rv, momentum=0.2, **kw)
    close(y, want, dtype)
    close(y, t_y, dtype, 10)
    if running:
        close(rm, want_rm, dtype)
        close(rv, want_rv, dtype)
        close(rm, t_rm, dtype, 10)
        close(rv, t_rv, dtype, 10)
    got = fn.instance_norm_backward(dy, x, w, b, rm0, rv0, **kw)
    for g, r, t in zip(got, ref.instance_norm_backward(dy, x, w, b, rm0, rv0, **kw),
                       ref.torch_instance_norm_backward(dy, x, w, b, rm0, rv0, **kw)):
        close(g, r, dtype, 10)
        close(g, t, dtype, 50)


@pytest.mark.parametrize("shape,groups", [((2, 4, 5), 2), ((3, 6, 4, 5), 3), ((2, 6, 3), 1),
                                          ((2, 6, 3), 6), ((1, 4, 3, 2, 2), 2), ((2, 2, 4200), 1)])
@pytest.mark.parametrize("affine", [True, False])
def test_group_norm_matches_reference_and_torch(backend, dtype, shape, groups, affine):
    x, dy, rng = data(shape, dtype, seed=3)
    w, b = params(shape[1], dtype, rng, affine)
    y, mean, invstd = fn.group_norm(x, groups, w, b, eps=1e-4, return_stats=True)
    assert mean.shape == invstd.shape == (shape[0], groups)
    close(y, ref.group_norm(x, groups, w, b, eps=1e-4), dtype)
    close(y, ref.torch_group_norm(x, groups, w, b, eps=1e-4), dtype, 10)
    got = fn.group_norm_backward(dy, x, groups, w, b, eps=1e-4)
    for g, r, t in zip(got, ref.group_norm_backward(dy, x, groups, w, b, eps=1e-4),
                       ref.torch_group_norm_backward(dy, x, groups, w, b, eps=1e-4)):
        close(g, r, dtype, 10)
        close(g, t, dtype, 50)
    again = fn.group_norm_backward(dy, x, groups, w, b, eps=1e-4, stats=(mean, invstd))
    for g, a in zip(got, again):
        bitwise(g, a)


# ---------------------------------------------------------------- determinism, accuracy, layouts


def _all_ops(x, dy, axis_last=False):
    C = x.shape[-1] if axis_last else x.shape[1]
    rng = np.random.default_rng(5)
    w, b = params(C, x.dtype, rng, True)
    rm, rv = np.zeros(C, x.dtype), np.ones(C, x.dtype)
    axis = -1 if axis_last else 1
    out = [*fn.batch_norm(x, rm, rv, w, b, training=True, axis=axis, return_stats=True), rm, rv,
           *fn.batch_norm_backward(dy, x, None, None, w, b, training=True, axis=axis),
           *fn.batch_norm_backward(dy, x, rm, rv, w, b, axis=axis)]
    if not axis_last:
        out += [*fn.instance_norm(x, w, b, return_stats=True),
                *fn.instance_norm_backward(dy, x, w, b),
                *fn.group_norm(x, 4, w, b, return_stats=True),
                *fn.group_norm_backward(dy, x, 4, w, b)]
    return out


@pytest.mark.parametrize("axis_last", [False, True], ids=["nchw", "channels_last"])
def test_bitwise_identical_across_backends_and_threads(dtype, axis_last):
    shape = BIG if not axis_last else (BIG[0] * BIG[2], BIG[3], 8)
    x, dy, _ = data(shape, dtype, seed=4, offset=3.0)
    results = []
    saved = fastnorm.get_backend()
    try:
        for backend in _dispatch.BACKENDS:
            fastnorm.set_backend(backend)
            for threads in (1, 2, 3):
                fastnorm.set_num_threads(threads)
                results.append(_all_ops(x, dy, axis_last))
    finally:
        fastnorm.set_backend(saved)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            bitwise(a, b)


def test_moments_are_what_batch_norm_normalizes_with(backend):
    x, _, _ = data(BIG, np.float32, seed=6)
    m = fn.moments(x, (0, 2, 3))
    _, mean, invstd = fn.batch_norm(x, training=True, return_stats=True, eps=1e-5)
    bitwise(m.mean, mean)
    bitwise(1.0 / np.sqrt(m.m2 / m.count + 1e-5), invstd)
    xl = np.ascontiguousarray(np.moveaxis(x, 1, -1))
    ml = fn.moments(xl, (0, 1, 2))
    _, mean_l, _ = fn.batch_norm(xl, axis=-1, training=True, return_stats=True)
    bitwise(ml.mean, mean_l)


@pytest.mark.parametrize("op", ["batch_norm", "batch_norm_cl", "instance_norm", "group_norm"])
def test_float32_at_a_large_offset_stays_within_1e5_of_float64(backend, op):
    rng = np.random.default_rng(7)
    shape = (8, 4, 4500) if op != "batch_norm_cl" else (3000, 4)
    x = (1e6 + rng.standard_normal(shape)).astype(np.float32)  # |mean| = 1e6 x spread
    if op == "batch_norm":
        y, want = fn.batch_norm(x, training=True), ref.batch_norm(x, training=True)[0]
    elif op == "batch_norm_cl":
        y, want = fn.batch_norm(x, axis=-1, training=True), ref.batch_norm(x, axis=-1, training=True)[0]
    elif op == "instance_norm":
        y, want = fn.instance_norm(x), ref.instance_norm(x)[0]
    else:
        y, want = fn.group_norm(x, 2), ref.group_norm(x, 2)
    assert np.abs(y - want).max() < 1e-5


LAYOUT_OPS = {
    "batch_norm": lambda x: fn.batch_norm(x, training=True),
    "batch_norm_axis2": lambda x: fn.batch_norm(x, np.zeros(x.shape[2]), np.ones(x.shape[2]), axis=2),
    "instance_norm": lambda x: fn.instance_norm(x),
    "group_norm": lambda x: fn.group_norm(x, 2),
    "batch_norm_backward": lambda x: fn.batch_norm_backward(x[::-1], x, training=True)[0],
}


@pytest.mark.parametrize("op", LAYOUT_OPS)
def test_any_layout_gives_the_same_bits(backend, layout, op):
    name, make = layout
    x = data((3, 4, 5, 6), np.float64, seed=8)[0]
    want = LAYOUT_OPS[op](x)
    got = LAYOUT_OPS[op](make(x))
    bitwise(np.asarray(got, want.dtype), want)


def test_out_and_in_place(backend, dtype):
    x, dy, _ = data((3, 4, 40), dtype, seed=9)
    want = fn.batch_norm(x, training=True)
    out = np.empty_like(x)
    assert fn.batch_norm(x, training=True, out=out) is out
    bitwise(out, want)
    xc = x.copy()
    fn.batch_norm(xc, training=True, out=xc)
    bitwise(xc, want)
    gn = fn.group_norm(x, 2)
    xc = x.copy()
    fn.group_norm(xc, 2, out=xc)
    bitwise(xc, gn)
    dx = fn.batch_norm_backward(dy, x, training=True)[0]
    dyc = dy.copy()
    fn.batch_norm_backward(dyc, x, training=True, out=dyc)
    bitwise(dyc, dx)
    # a strided out gets the same values
    big = np.zeros((3, 8, 40), dtype)
    fn.instance_norm(x, out=big[:, ::2])
    bitwise(big[:, ::2], fn.instance_norm(x))
    assert (big[:, 1::2] == 0).all()


def test_empty_and_nan(backend):
    x = np.empty((0, 3, 4), np.float32)
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    y, mean, _ = fn.batch_norm(x, rm, rv, training=True, return_stats=True)
    assert y.shape == x.shape and np.isnan(mean).all() and (rm == 0).all()
    assert fn.group_norm(x, 3).shape == x.shape
    assert fn.instance_norm(x).shape == x.shape
    dx, dw, db = fn.batch_norm_backward(x, x, None, None, np.ones(3, np.float32), np.ones(3, np.float32), training=True)
    assert dx.shape == x.shape and (dw == 0).all() and (db == 0).all()
    x = np.arange(24.0).reshape(2, 3, 4)
    x[1, 1, 2] = np.nan
    y = fn.batch_norm(x, training=True)
    assert np.isnan(y[:, 1]).all() and np.isfinite(y[:, [0, 2]]).all()
    y = fn.group_norm(x, 3)
    assert np.isnan(y[1, 1]).all() and np.isfinite(y[0]).all() and np.isfinite(y[1, [0, 2]]).all()


# ---------------------------------------------------------------- bad inputs


def test_bad_inputs_are_refused_before_anything_is_written(backend):
    x = np.ones((4, 3, 5), np.float32)
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    with pytest.raises(TypeError, match="x must be a float32 or float64"):
        fn.batch_norm(np.ones((4, 3), np.int32))
    with pytest.raises(TypeError, match="x must be a float32 or float64"):
        fn.group_norm(np.ones((4, 4), np.float16), 2)
    with pytest.raises(TypeError, match="dy must have the dtype"):
        fn.batch_norm_backward(np.ones((4, 3, 5)), x, training=True)
    with pytest.raises(ValueError, match="weight must have shape"):
        fn.batch_norm(x, training=True, weight=np.ones(4, np.float32))
    with pytest.raises(ValueError, match="running_mean must have shape"):
        fn.batch_norm(x, np.zeros(4), np.ones(4))
    with pytest.raises(ValueError, match="together"):
        fn.batch_norm(x, rm, None)
    with pytest.raises(ValueError, match="running_mean must be defined in evaluation mode"):
        fn.batch_norm(x)
    with pytest.raises(RuntimeError, match="running_mean must be defined in evaluation mode"):
        torch.nn.functional.batch_norm(torch.ones(4, 3), None, None)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        fn.batch_norm(np.ones(5))
    with pytest.raises(ValueError, match="dy and x must have the same shape"):
        fn.group_norm_backward(np.ones((4, 3, 4), np.float32), x, 3)
    with pytest.raises(ValueError, match="divide the number of channels"):
        fn.group_norm(x, 2)
    with pytest.raises(TypeError, match="num_groups must be an int"):
        fn.group_norm(x, 1.5)
    with pytest.raises(ValueError, match="needs running_mean"):
        fn.instance_norm(x, training=False)
    with pytest.raises(ValueError, match="momentum"):
        fn.batch_norm(x, rm, rv, training=True, momentum=2.0)
    with pytest.raises(ValueError, match="eps"):
        fn.batch_norm(x, training=True, eps=-1.0)
    with pytest.raises(TypeError, match="updated in place"):
        fn.batch_norm(x, [0.0] * 3, [1.0] * 3, training=True)
    ro = np.zeros(3, np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        fn.batch_norm(x, ro, rv, training=True)
    fn.batch_norm(x, ro, rv)  # read-only running stats are fine in eval
    with pytest.raises(ValueError, match="stats"):
        fn.batch_norm_backward(x, x, training=True, stats=(np.zeros(3),))
    out = np.full((4, 3, 6), 7, np.float32)
    with pytest.raises(ValueError, match="out must have shape"):
        fn.batch_norm(x, training=True, out=out)
    out = np.full(x.shape, 7, np.float64)
    with pytest.raises(TypeError, match="out must have dtype"):
        fn.instance_norm(x, out=out)
    assert (out == 7).all() and (rm == 0).all() and (rv == 1).all()
    with pytest.raises(ValueError, match="repeats"):
        fn.moments(x, (0, 0))
    with pytest.raises(ValueError, match="running_mean and running_var"):
        fn.fold_batch_norm(np.ones((3, 2)), None, {"weight": np.ones(3)})


# ---------------------------------------------------------------- fold_batch_norm


@pytest.mark.parametrize("has_bias", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_fold_batch_norm_equals_layer_then_bn(has_bias, affine):
    rng = np.random.default_rng(10)
    conv = torch.nn.Conv2d(3, 5, 3, bias=has_bias).double()
    bn = torch.nn.BatchNorm2d(5, affine=affine, eps=1e-3).double()
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor(rng.standard_normal(5)))
        bn.running_var.copy_(torch.tensor(1 + rng.random(5)))
        if affine:
            bn.weight.copy_(torch.tensor(rng.standard_normal(5)))
            bn.bias.copy_(torch.tensor(rng.standard_normal(5)))
    bn.eval()
    state = {k: t.numpy() for k, t in bn.state_dict().items()}
    w = conv.weight.detach().numpy()
    b = conv.bias.detach().numpy() if has_bias else None
    fw, fb = fn.fold_batch_norm(w, b, state, eps=1e-3)
    assert fw.shape == w.shape and fb.shape == (5,)
    x = torch.tensor(rng.standard_normal((2, 3, 8, 8)))
    with torch.no_grad():
        want = bn(conv(x)).numpy()
        got = torch.nn.functional.conv2d(x, torch.tensor(fw), torch.tensor(fb)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    # a linear layer with our own layer and state
    lin_w = rng.standard_normal((4, 6)).astype(np.float32)
    bn1 = fastnorm.nn.BatchNorm1d(4)
    bn1(rng.standard_normal((16, 4)).astype(np.float32) * 3 + 1)
    bn1.eval()
    xs = rng.standard_normal((7, 6)).astype(np.float32)
    fw, fb = fn.fold_batch_norm(lin_w, None, bn1.state_dict())
    assert fw.dtype == np.float32
    np.testing.assert_allclose(xs @ fw.T + fb, bn1(xs @ lin_w.T), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- threads and fork

_SCRIPT = """
import os, sys, threading
import numpy as np
import fastnorm, fastnorm.functional as fn
fastnorm.set_backend(sys.argv[1])
fastnorm.set_num_threads(2)
rng = np.random.default_rng(0)
x = rng.standard_normal((16, 8, 66, 64)).astype(np.float32)
w = np.ones(8, np.float32)

def work():
    y, m, s = fn.batch_norm(x, training=True, return_stats=True)
    g = fn.group_norm(x, 4, w, w)
    dx = fn.instance_norm_backward(x, x, w, w)[0]
    return b"".join(np.ascontiguousarray(a).tobytes() for a in (y, m, s, g, dx))

ref = work()
bad = []
def worker():
    for _ in range(3):
        if work() != ref:
            bad.append(1)
ts = [threading.Thread(target=worker) for _ in range(4)]
[t.start() for t in ts]
[t.join() for t in ts]
pid = os.fork()
if pid == 0:
    os._exit(0 if work() == ref else 3)
_, status = os.waitpid(pid, 0)
sys.exit(1 if bad else os.waitstatus_to_exitcode(status))
"""


@pytest.mark.parametrize("backend_name", _dispatch.BACKENDS)
def test_many_threads_and_fork_give_the_same_bits(backend_name):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _SCRIPT, backend_name], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
