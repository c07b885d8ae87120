"""softmax / log_softmax / softmax_cross_entropy (+ backward, fused): torch and SciPy as
oracles, every flag, extreme logits, layouts, bad inputs, bitwise equality across backends."""
import itertools

import numpy as np
import pytest
import scipy.special as sps
import torch
import torch.nn.functional as F

import fastnorm
import fastnorm.functional as fn
from fastnorm import _dispatch

from conftest import LAYOUTS

HUGE = (600, 1037)
assert HUGE[0] * HUGE[1] > _dispatch.NUMBA_PARALLEL_MIN_WORK


def tol(dtype):
    return 2e-6 if np.dtype(dtype) == np.float32 else 1e-12


def torch_ce(x, labels, dloss=None, **kw):
    """(loss, dlogits) by torch autograd, in x's dtype."""
    xt = torch.tensor(x, requires_grad=True)
    w = kw.pop("weight", None)
    loss = F.cross_entropy(xt, torch.tensor(labels, dtype=torch.int64),
                           weight=None if w is None else torch.tensor(w), **kw)
    g = torch.ones_like(loss) if dloss is None else torch.tensor(np.asarray(dloss, x.dtype))
    loss.backward(g)
    return loss.detach().numpy(), xt.grad.numpy()


def numpy_ce(x, labels, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    """Our float64 reference: classes on axis 1, straight from the formula."""
    x = np.moveaxis(np.asarray(x, np.float64), 1, -1) if x.ndim > 1 else np.asarray(x, np.float64)[None]
    lab = np.asarray(labels).reshape(-1)
    x = x.reshape(-1, x.shape[-1])
    C = x.shape[-1]
    w = np.ones(C) if weight is None else np.asarray(weight, np.float64)
    mx = x.max(-1, keepdims=True)
    lse = mx[:, 0] + np.log(np.exp(x - mx).sum(-1))
    valid = lab != ignore_index
    y = np.where(valid, lab, 0)
    nll = w[y] * (lse - x[np.arange(len(y)), y])
    smooth = ((lse[:, None] - x) * w).sum(-1)
    loss = np.where(valid, (1 - label_smoothing) * nll + label_smoothing / C * smooth, 0.0)
    if reduction == "none":
        return loss.reshape(np.asarray(labels).shape)
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / w[y][valid].sum()


def case(shape, dtype, seed=0, scale=3.0, ignore=True):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * scale).astype(dtype)
    C = shape[1] if len(shape) > 1 else shape[0]
    lab_shape = shape[:1] + shape[2:] if len(shape) > 1 else ()
    lab = rng.integers(0, C, lab_shape)
    if ignore and lab.size > 1:
        lab.reshape(-1)[1] = -100
    w = rng.random(C).astype(dtype)
    return x, lab, w


FLAGS = list(itertools.product([False, True], ["none", "mean", "sum"], [0.0, 0.15]))


@pytest.mark.parametrize("weighted,reduction,smoothing", FLAGS)
@pytest.mark.parametrize("shape", [(7, 11), (3, 5, 2, 3), (9,)])
def test_matches_torch_values_and_gradients(backend, dtype, weighted, reduction, smoothing, shape):
    x, lab, w = case(shape, dtype)
    kw = dict(weight=w if weighted else None, reduction=reduction, label_smoothing=smoothing)
    tl, tg = torch_ce(x, lab, **kw)
    loss = fn.softmax_cross_entropy(x, lab, **kw)
    assert np.asarray(loss).dtype == dtype and np.shape(loss) == tl.shape
    np.testing.assert_allclose(loss, tl, rtol=tol(dtype), atol=tol(dtype))
    np.testing.assert_allclose(loss, numpy_ce(x, lab, **kw), rtol=tol(dtype), atol=tol(dtype))
    dloss = np.ones(tl.shape) if reduction == "none" else 1.0
    g = fn.softmax_cross_entropy_backward(dloss, x, lab, **kw)
    assert g.dtype == dtype and g.shape == x.shape
    np.testing.assert_allclose(g, tg, rtol=tol(dtype), atol=tol(dtype))
    fl, fg = fn.softmax_cross_entropy(x, lab, return_grad=True, **kw)
    np.testing.assert_array_equal(fl, loss)
    np.testing.assert_array_equal(fg, g)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_upstream_gradient_scales(backend, reduction):
    x, lab, w = case((6, 8), np.float64, seed=1)
    rng = np.random.default_rng(2)
    dloss = rng.standard_normal(6) if reduction == "none" else 2.5
    _, tg = torch_ce(x, lab, dloss, weight=w, reduction=reduction, label_smoothing=0.1)
    g = fn.softmax_cross_entropy_backward(dloss, x, lab, weight=w, reduction=reduction, label_smoothing=0.1)
    np.testing.assert_allclose(g, tg, rtol=1e-12, atol=1e-14)


def test_extreme_logits_stay_finite(backend, dtype):
    x = np.array([[5000.0, -5000.0, 4990.0], [1e4, 1e4, 1e4], [-3000.0, -3000.5, -3100.0],
                  [0.0, -np.inf, 1.0]], dtype)
    lab = np.array([1, 2, 0, 2])
    for kw in (dict(), dict(label_smoothing=0.2, reduction="none")):
        if kw.get("label_smoothing"):
            x = x[:3]
            lab = lab[:3]
        tl, tg = torch_ce(x, lab, **kw)
        loss, g = fn.softmax_cross_entropy(x, lab, return_grad=True, **kw)
        assert np.isfinite(loss).all() and np.isfinite(g).all()
        np.testing.assert_allclose(loss, tl, rtol=tol(dtype), atol=tol(dtype))
        np.testing.assert_allclose(g, tg, rtol=tol(dtype), atol=tol(dtype))


def test_nan_logit_gives_nan_in_its_row_only(backend):
    x, lab, _ = case((4, 6), np.float64, ignore=False)
    x[2, 3] = np.nan
    loss, g = fn.softmax_cross_entropy(x, lab, reduction="none", return_grad=True)
    assert np.isnan(loss[2]) and np.isfinite(loss[[0, 1, 3]]).all()
    assert np.isnan(g[2]).all() and np.isfinite(g[[0, 1, 3]]).all()


def test_all_ignored_and_empty(backend, dtype):
    x, lab, w = case((3, 4), dtype)
    lab[:] = 7
    for kw in (dict(), dict(weight=w)):
        loss = fn.softmax_cross_entropy(x, lab, ignore_index=7, **kw)
        assert np.isnan(loss)
        assert np.isnan(torch_ce(x, lab, ignore_index=7, **kw)[0])
        assert fn.softmax_cross_entropy(x, lab, ignore_index=7, reduction="sum", **kw) == 0
        np.testing.assert_array_equal(fn.softmax_cross_entropy_backward(1.0, x, lab, ignore_index=7,
                                                                        reduction="sum", **kw), 0)
    e = np.empty((0, 4), dtype)
    assert fn.softmax_cross_entropy(e, np.empty(0, np.int64), reduction="sum") == 0
    assert fn.softmax_cross_entropy(e, np.empty(0, np.int64), reduction="none").shape == (0,)
    assert fn.softmax_cross_entropy_backward(1.0, e, np.empty(0, np.int64)).shape == (0, 4)


@pytest.mark.filterwarnings("ignore:invalid value encountered in cast")  # NaN guards in int labels' layouts
def test_every_layout_equals_c_contiguous(backend, dtype, layout):
    name, make = layout
    x, lab, w = case((5, 3, 4), dtype, seed=3)
    want = fn.softmax_cross_entropy(x, lab, weight=w, reduction="none", return_grad=True)
    got = fn.softmax_cross_entropy(make(x), make(lab), weight=make(w), reduction="none", return_grad=True)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(fn.softmax(make(x), axis=1), fn.softmax(x, axis=1))
    np.testing.assert_array_equal(fn.log_softmax(make(x)), fn.log_softmax(x))


def test_backward_out(backend, dtype):
    x, lab, _ = case((5, 7), dtype)
    out = np.full(x.shape, 9.0, dtype)
    r = fn.softmax_cross_entropy_backward(1.0, x, lab, out=out)
    assert r is out
    np.testing.assert_array_equal(out, fn.softmax_cross_entropy_backward(1.0, x, lab))
    with pytest.raises(ValueError, match="out must have shape"):
        fn.softmax_cross_entropy_backward(1.0, x, lab, out=np.empty((5, 6), dtype))


def test_bad_inputs(backend):
    x, lab, w = case((4, 5), np.float64, ignore=False)
    with pytest.raises(ValueError, match=r"labels must be class indices in \[0, 5\).*got 5"):
        fn.softmax_cross_entropy(x, np.array([0, 1, 5, 2]))
    with pytest.raises(ValueError, match="got -1"):
        fn.softmax_cross_entropy(x, np.array([0, 1, -1, 2]))
    with pytest.raises(ValueError, match="got -100"):
        fn.softmax_cross_entropy(x, np.array([0, 1, -100, 2]), ignore_index=-1)
    with pytest.raises(TypeError, match="labels must be an integer array"):
        fn.softmax_cross_entropy(x, lab.astype(np.float64))
    with pytest.raises(TypeError, match="logits must be a float32 or float64"):
        fn.softmax_cross_entropy(x.astype(np.int32), lab)
    with pytest.raises(ValueError, match=r"labels must have shape \(4,\).*got \(3,\)"):
        fn.softmax_cross_entropy(x, lab[:3])
    with pytest.raises(ValueError, match=r"weight must have shape \(5,\)"):
        fn.softmax_cross_entropy(x, lab, weight=w[:4])
    with pytest.raises(TypeError, match="weight must be a float32 or float64"):
        fn.softmax_cross_entropy(x, lab, weight=np.arange(5))
    with pytest.raises(ValueError, match="reduction"):
        fn.softmax_cross_entropy(x, lab, reduction="avg")
    with pytest.raises(ValueError, match="label_smoothing"):
        fn.softmax_cross_entropy(x, lab, label_smoothing=1.5)
    with pytest.raises(ValueError, match="dloss must be a scalar"):
        fn.softmax_cross_entropy_backward(np.ones(4), x, lab)
    with pytest.raises(ValueError, match=r"dloss must have the shape of labels \(4,\)"):
        fn.softmax_cross_entropy_backward(np.ones(3), x, lab, reduction="none")
    with pytest.raises(ValueError, match="0-d"):
        fn.softmax_cross_entropy(np.float64(1.0), 0)


# ---------------------------------------------------------------- softmax / log_softmax


@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_softmax_matches_scipy_and_torch(backend, dtype, axis):
    x, _, _ = case((4, 37, 3), dtype, scale=10.0)
    for ours, theirs, tfn in ((fn.softmax, sps.softmax, torch.softmax),
                              (fn.log_softmax, sps.log_softmax, torch.log_softmax)):
        got = ours(x, axis=axis)
        assert got.dtype == dtype and got.shape == x.shape
        np.testing.assert_allclose(got, theirs(x.astype(np.float64), axis=axis), rtol=tol(dtype), atol=tol(dtype))
        np.testing.assert_allclose(got, tfn(torch.tensor(x), axis).numpy(), rtol=tol(dtype) * 5, atol=tol(dtype) * 5)


def test_softmax_extreme_and_special_values(backend, dtype):
    x = np.array([[1e4, 1e4 - 1, -1e4], [-np.inf, 0.0, 0.0], [3000.0, np.nan, 0.0]], dtype)
    s, ls = fn.softmax(x), fn.log_softmax(x)
    np.testing.assert_allclose(s[:2], sps.softmax(x[:2].astype(np.float64), axis=-1), rtol=tol(dtype), atol=tol(dtype))
    np.testing.assert_allclose(ls[:2], sps.log_softmax(x[:2].astype(np.float64), axis=-1), rtol=tol(dtype))
    assert s[1, 0] == 0 and ls[1, 0] == -np.inf
    assert np.isnan(s[2]).all() and np.isnan(ls[2]).all()


def test_softmax_out_and_in_place(backend, dtype):
    x, _, _ = case((6, 9), dtype)
    want = fn.softmax(x)
    out = np.empty_like(x)
    assert fn.softmax(x, out=out) is out
    np.testing.assert_array_equal(out, want)
    y = x.copy()
    fn.log_softmax(y, out=y)
    np.testing.assert_array_equal(y, fn.log_softmax(x))
    out = np.empty_like(x)
    fn.softmax(x, axis=0, out=out)
    np.testing.assert_array_equal(out, fn.softmax(x, axis=0))
    with pytest.raises(TypeError, match="out must have dtype"):
        fn.softmax(x, out=np.empty(x.shape, np.int64))
    with pytest.raises(TypeError, match="x must be a float32 or float64"):
        fn.softmax(np.arange(4))
    assert fn.softmax(np.empty((0, 3), dtype)).shape == (0, 3)


def test_bitwise_same_for_threads_and_backends():
    results = {}
    rng = np.random.default_rng(9)
    for dt in (np.float32, np.float64):
        x = (rng.standard_normal(HUGE) * 30).astype(dt)
        lab = rng.integers(0, HUGE[1], HUGE[0])
        lab[5] = -100
        w = rng.random(HUGE[1])
        for be in _dispatch.BACKENDS:
            fastnorm.set_backend(be)
            for threads in (1, 2, 3):
                fastnorm.set_num_threads(threads)
                r = [fn.softmax(x), fn.log_softmax(x)]
                r += fn.softmax_cross_entropy(x, lab, weight=w, label_smoothing=0.1, reduction="none",
                                              return_grad=True)
                r.append(fn.softmax_cross_entropy_backward(0.5, x, lab))
                results[dt, be, threads] = r
    for key, r in results.items():
        for a, b in zip(results[key[0], "numba", 1], r):
            assert a.tobytes() == b.tobytes(), key


def test_float32_exp_within_a_float32_ulp_and_flushes_below_minus_86():
    from fastnorm.kernels.numba import divergence as nk
    d = np.concatenate([np.random.default_rng(0).uniform(-86, 0, 3000), [0.0, -1e-8, -85.99]]).astype(np.float32)
    got = np.array([nk.fexp32(v) for v in d], np.float64)
    want = np.exp(d.astype(np.float64))
    assert np.all(np.abs(got - want) <= 1.3 * np.spacing(want.astype(np.float32)))
    assert nk.fexp32(np.float32(-87.0)) == 0 and nk.fexp32(np.float32(-np.inf)) == 0
    assert np.isnan(nk.fexp32(np.float32(np.nan))) and nk.fexp32(np.float32(0.0)) == 1.0
