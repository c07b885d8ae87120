"""dropout, dropout_backward, dropout_mask, gaussian_dropout and the layers: the law (keep rate,
independence), exact scaling, the reference mask, torch's semantics, backends/threads/layouts,
forward/backward consistency, bad inputs."""
import math

import numpy as np
import pytest

import fastnorm
import fastnorm.functional as fn
from fastnorm import _dispatch, nn

import reference_dropout as rd
from conftest import LAYOUTS

torch = pytest.importorskip("torch")


def randn(shape, dtype, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("p", [0.05, 0.3, 0.5, 0.9, 0.999])
def test_keep_rate_within_five_sigma(backend, p):
    n = 1 << 20
    keep = fn.dropout_mask(n, p, seed=12345)
    sigma = math.sqrt(p * (1 - p) / n)
    assert abs(keep.mean() - (1 - p)) < 5 * sigma
    y = fn.dropout(np.ones(n, np.float32), p, seed=12345)
    np.testing.assert_array_equal(y != 0, keep)


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_no_correlation_between_neighbours(p):
    m = fn.dropout_mask((512, 1024), p, seed=7).astype(np.float64)
    bound = 5 / math.sqrt(m.size)
    flat = m.ravel()
    for lag in (1, 2, 3, 4, 63, 64, 65, 128, 192, 256, 1024):  # within and across Philox blocks
        assert abs(np.corrcoef(flat[:-lag], flat[lag:])[0, 1]) < bound, lag
    assert abs(np.corrcoef(m[:-1].ravel(), m[1:].ravel())[0, 1]) < bound  # rows
    assert abs(np.corrcoef(m[:, :-1].ravel(), m[:, 1:].ravel())[0, 1]) < bound  # columns


def test_distinct_seeds_give_distinct_masks():
    n, p = 1 << 16, 0.5
    masks = [fn.dropout_mask(n, p, seed=s) for s in (0, 1, 2, 1 << 32, (1 << 64) - 1)]
    for i in range(len(masks)):
        for j in range(i):
            differ = (masks[i] != masks[j]).mean()
            assert abs(differ - 2 * p * (1 - p)) < 5 * math.sqrt(0.25 / n)
    np.testing.assert_array_equal(fn.dropout_mask(n, p, seed=1), masks[1])  # same seed, same mask


@pytest.mark.parametrize("p", [0.1, 0.5, 0.75, 1 / 3])
def test_exact_scaling_and_reference_mask(backend, dtype, p):
    x = randn((13, 57), dtype)
    y = fn.dropout(x, p, seed=2024)
    ref, keep = rd.dropout(x, p, 2024)
    assert y.dtype == dtype and y.shape == x.shape
    np.testing.assert_array_equal(fn.dropout_mask(x.shape, p, 2024), keep)
    scale = dtype.type(1.0 / (1.0 - p))
    np.testing.assert_array_equal(y[keep], x[keep] * scale)  # one rounding, in x's dtype
    assert (y[~keep] == 0).all()
    np.testing.assert_allclose(y, ref, rtol=1e-6 if dtype == np.float32 else 1e-15)


def test_matches_torch_semantics(dtype):
    x = randn((64, 33), dtype)
    x[0, :8] = np.nan
    x[1, :8] = np.inf
    p = 0.4
    t = torch.from_numpy(x)
    yt = torch.nn.functional.dropout(t, p, training=True).numpy()
    y = fn.dropout(x, p, seed=3)
    # torch multiplies by the noise: NaN stays NaN, a dropped inf gives NaN; ours does the same
    keep = fn.dropout_mask(x.shape, p, seed=3)
    assert np.isnan(yt[np.isnan(x)]).all() and np.isnan(y[np.isnan(x)]).all()
    assert (np.isinf(yt[1, :8]) | np.isnan(yt[1, :8])).all()
    np.testing.assert_array_equal(np.isnan(y), np.isnan(x) | (np.isinf(x) & ~keep))
    np.testing.assert_array_equal(np.isinf(y), np.isinf(x) & keep)
    kept_t = (yt != 0) & np.isfinite(yt)
    np.testing.assert_allclose(yt[kept_t], x[kept_t] / (1 - p), rtol=2e-7 if dtype == np.float32 else 1e-15)
    # the scale on kept values equals torch's within its float rounding
    kept = (y != 0) & np.isfinite(y)
    np.testing.assert_allclose(y[kept], x[kept] / (1 - p), rtol=2e-7 if dtype == np.float32 else 1e-15)
    # eval and p = 0: the input itself; p = 1: zeros (x * 0)
    assert torch.nn.functional.dropout(t, p, training=False) is t
    assert fn.dropout(x, p, training=False) is x
    assert fn.dropout(x, 0.0, seed=1) is x
    z, zt = fn.dropout(x, 1.0, seed=1), torch.nn.functional.dropout(t, 1.0).numpy()
    np.testing.assert_array_equal(z, zt)
    np.testing.assert_array_equal(np.isnan(z), ~np.isfinite(x))
    assert not fn.dropout_mask(x.shape, 1.0, seed=1).any()
    assert fn.dropout_mask(x.shape, 0.0, seed=1).all()


def test_identical_across_backends_and_threads(dtype):
    x = randn((1 << 20) + 1000, dtype)  # above the streaming-store threshold too
    results = []
    for b in _dispatch.BACKENDS:
        fastnorm.set_backend(b)
        for t in (1, 2, 3):
            fastnorm.set_num_threads(t)
            results.append((fn.dropout(x, 0.3, seed=77), fn.dropout_backward(x, 0.3, seed=77),
                            fn.dropout_mask(x.shape, 0.3, seed=77),
                            fn.gaussian_dropout(x, 0.3, seed=77)))
    for r in results[1:]:
        for a, b in zip(r, results[0]):
            np.testing.assert_array_equal(a, b)


def test_forward_backward_consistency(backend, dtype):
    x = randn((7, 9, 11), dtype)
    dy = randn(x.shape, dtype, seed=1)
    y, seed = fn.dropout(x, 0.35, return_seed=True)
    assert isinstance(seed, int)
    dx = fn.dropout_backward(dy, 0.35, seed)
    keep = fn.dropout_mask(x.shape, 0.35, seed)
    np.testing.assert_array_equal(dx, np.where(keep, dy * dtype.type(1 / 0.65), 0))
    np.testing.assert_array_equal(y != 0, keep & (x != 0))
    # autograd through torch with our mask gives our gradient
    t = torch.from_numpy(x).requires_grad_()
    (t * torch.from_numpy(keep.astype(dtype)) * float(dtype.type(1 / 0.65))).backward(torch.from_numpy(dy))
    np.testing.assert_allclose(dx, t.grad.numpy(), rtol=1e-6)
    np.testing.assert_array_equal(fn.dropout_backward(dy, 0.35, seed, training=False), dy)
    np.testing.assert_array_equal(fn.dropout_backward(dy, 0.0, seed), dy)


def test_any_layout_gives_the_same_result(layout, dtype):
    name, make = layout
    c = randn((6, 45), dtype)
    expected = fn.dropout(c, 0.5, seed=9)
    np.testing.assert_array_equal(fn.dropout(make(c), 0.5, seed=9), expected)
    np.testing.assert_array_equal(fn.dropout_backward(make(c), 0.5, seed=9), expected)
    g = fn.gaussian_dropout(c, 0.5, seed=9)
    np.testing.assert_array_equal(fn.gaussian_dropout(make(c), 0.5, seed=9), g)
    out = make(np.zeros_like(c))
    if out.flags.writeable:
        r = fn.dropout(c, 0.5, seed=9, out=out)
        assert r is out
        np.testing.assert_array_equal(out, expected)


def test_out_and_in_place(backend, dtype):
    x = randn((40, 30), dtype)
    expected = fn.dropout(x, 0.5, seed=4)
    a = x.copy()
    assert fn.dropout(a, 0.5, seed=4, out=a) is a
    np.testing.assert_array_equal(a, expected)
    a = x.copy()
    assert fn.dropout_backward(a, 0.5, 4, out=a) is a
    np.testing.assert_array_equal(a, expected)
    out = np.empty_like(x)
    assert fn.dropout(x, 0.5, seed=4, training=False, out=out) is out
    np.testing.assert_array_equal(out, x)
    # input left unmodified
    x0 = x.copy()
    fn.dropout(x, 0.5, seed=4)
    fn.gaussian_dropout(x, 0.5, seed=4)
    np.testing.assert_array_equal(x, x0)


def test_empty_and_zero_d(backend, dtype):
    assert fn.dropout(np.empty((0, 5), dtype), 0.5, seed=1).shape == (0, 5)
    assert fn.dropout_mask((3, 0), 0.5, seed=1).shape == (3, 0)
    y = fn.dropout(np.array(2.0, dtype), 0.5, seed=1)
    assert y.shape == () and float(y) in (0.0, 4.0)


def test_bad_inputs():
    x = np.ones((3, 4), np.float32)
    for p in (-0.1, 1.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="p must be in"):
            fn.dropout(x, p, seed=0)
        with pytest.raises(ValueError, match="p must be in"):
            fn.dropout_backward(x, p, 0)
        with pytest.raises(ValueError, match="p must be in"):
            fn.dropout_mask(x.shape, p, 0)
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\)"):
        fn.gaussian_dropout(x, 1.0, seed=0)
    with pytest.raises(TypeError, match="p must be"):
        fn.dropout(x, "0.5", seed=0)
    for bad in (np.ones(3, np.int32), np.ones(3, bool), np.ones(3, np.float16), np.ones(3, complex)):
        with pytest.raises(TypeError, match="x must be a float32 or float64"):
            fn.dropout(bad, 0.5, seed=0)
        with pytest.raises(TypeError, match="dy must be a float32 or float64"):
            fn.dropout_backward(bad, 0.5, 0)
    with pytest.raises(TypeError, match="seed"):
        fn.dropout_backward(x, 0.5, None)
    with pytest.raises(ValueError, match="seed"):
        fn.dropout(x, 0.5, seed=-3)
    with pytest.raises(TypeError, match="seed"):
        fn.dropout(x, 0.5, seed=0.5)
    out = np.full((3, 5), 7.0, np.float32)
    with pytest.raises(ValueError, match="shape"):
        fn.dropout(x, 0.5, seed=0, out=out)
    assert (out == 7).all()
    with pytest.raises(TypeError, match="dtype"):
        fn.dropout(x, 0.5, seed=0, out=np.empty((3, 4)))
    ro = np.empty_like(x)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        fn.dropout(x, 0.5, seed=0, out=ro)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_gaussian_dropout_law_and_reference(backend, dtype, p):
    n = 1 << 18
    y = fn.gaussian_dropout(np.ones(n, dtype), p, seed=11)
    var = p / (1 - p)
    assert abs(y.mean() - 1.0) < 5 * math.sqrt(var / n)
    assert abs(y.var() / var - 1.0) < 0.02
    ref = 1.0 + math.sqrt(var) * rd.normals(11, 200)
    np.testing.assert_allclose(y[:200], ref, rtol=1e-6 if dtype == np.float32 else 1e-13)
    x = randn((30, 20), dtype)
    yx = fn.gaussian_dropout(x, p, seed=11)
    np.testing.assert_allclose(yx, x * y[:600].reshape(30, 20).astype(np.float64),
                               rtol=1e-6 if dtype == np.float32 else 1e-14)
    dy = randn(x.shape, dtype, 2)
    np.testing.assert_array_equal(fn.gaussian_dropout_backward(dy, p, 11),
                                  fn.gaussian_dropout(dy, p, seed=11))
    assert fn.gaussian_dropout(x, p, training=False) is x
    assert fn.gaussian_dropout(x, 0.0, seed=1) is x


def test_dropout_layer(backend):
    layer = nn.Dropout(0.25, seed=5)
    x = randn((16, 32), np.float32)
    y1 = layer(x)
    s1 = layer.seed
    dy = randn(x.shape, np.float32, 1)
    np.testing.assert_array_equal(layer.backward(dy), fn.dropout_backward(dy, 0.25, s1))
    np.testing.assert_array_equal(y1, fn.dropout(x, 0.25, seed=s1))
    y2 = layer(x)
    assert layer.seed != s1 and not np.array_equal(y1, y2)  # a fresh mask per forward
    # what the layer keeps between forward and backward: a seed, no array
    assert not any(isinstance(a, np.ndarray) for a in vars(layer).values())
    assert layer.state_dict() == {} and layer.params == {} and layer.grads == {}
    # the same seed, the same sequence of masks
    again = nn.Dropout(0.25, seed=5)
    np.testing.assert_array_equal(again(x), y1)
    layer.eval()
    assert layer(x) is x
    np.testing.assert_array_equal(layer.backward(dy), dy)
    layer.train()
    a = x.copy()
    inplace = nn.Dropout(0.25, inplace=True, seed=5)
    assert inplace(a) is a
    np.testing.assert_array_equal(a, y1)
    with pytest.raises(TypeError, match="float32"):
        nn.Dropout(0.5)(x.astype(np.float64))
    with pytest.raises(ValueError, match="p must be in"):
        nn.Dropout(1.5)
    with pytest.raises(RuntimeError, match="forward"):
        nn.Dropout(0.5).backward(dy)
    # seedless layers draw from fastnorm.random
    fastnorm.random.manual_seed(1)
    l1 = nn.Dropout(0.5)(x)
    fastnorm.random.manual_seed(1)
    np.testing.assert_array_equal(nn.Dropout(0.5)(x), l1)


def test_gaussian_dropout_layer():
    layer = nn.GaussianDropout(0.3, dtype=np.float64, seed=8)
    x = randn((10, 10), np.float64)
    y = layer(x)
    np.testing.assert_array_equal(y, fn.gaussian_dropout(x, 0.3, seed=layer.seed))
    np.testing.assert_array_equal(layer.backward(x), y)
    assert layer.eval()(x) is x
    with pytest.raises(ValueError):
        nn.GaussianDropout(1.0)
