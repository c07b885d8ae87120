"""nn.LayerNorm / nn.RMSNorm against torch.nn modules: params, grads, train/eval, state_dicts."""
import numpy as np
import pytest
import torch

from fastnorm import nn

TORCH_DTYPE = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}

# (our class, torch class, constructor kwargs)
LAYERS = [
    pytest.param(nn.LayerNorm, torch.nn.LayerNorm, dict(eps=1e-5), id="LayerNorm"),
    pytest.param(nn.LayerNorm, torch.nn.LayerNorm, dict(eps=1e-3, bias=False), id="LayerNorm-nobias"),
    pytest.param(nn.LayerNorm, torch.nn.LayerNorm, dict(elementwise_affine=False), id="LayerNorm-noaffine"),
    pytest.param(nn.RMSNorm, torch.nn.RMSNorm, dict(eps=1e-6), id="RMSNorm"),
    pytest.param(nn.RMSNorm, torch.nn.RMSNorm, dict(eps=1e-6, elementwise_affine=False), id="RMSNorm-noaffine"),
    pytest.param(nn.RMSNorm, torch.nn.RMSNorm, dict(eps=None), id="RMSNorm-eps-None"),
]
SHAPES = [(16,), (3, 8)]


def tol(dtype):
    return dict(rtol=1e-5, atol=1e-5) if np.dtype(dtype) == np.float32 else dict(rtol=1e-10, atol=1e-10)


def make_pair(ours_cls, torch_cls, kwargs, shape, dtype, rng):
    """Our layer and torch's with the same random parameters."""
    tm = torch_cls(shape, dtype=TORCH_DTYPE[np.dtype(dtype)], **kwargs)
    with torch.no_grad():
        for p in tm.parameters():
            p.copy_(torch.from_numpy(rng.standard_normal(tuple(p.shape)).astype(dtype)))
    m = ours_cls(shape, dtype=dtype, **kwargs)
    m.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
    return m, tm


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("ours_cls,torch_cls,kwargs", LAYERS)
def test_training_steps_match_torch(backend, ours_cls, torch_cls, kwargs, dtype, shape):
    rng = np.random.default_rng(0)
    m, tm = make_pair(ours_cls, torch_cls, kwargs, shape, dtype, rng)
    names = [k for k, _ in tm.named_parameters()]
    assert list(m.params) == names
    for p in m.params.values():
        assert p.dtype == dtype and p.shape == shape
    lr = 0.1
    for step in range(3):
        x = (2.0 + rng.standard_normal((5,) + shape)).astype(dtype)
        dy = rng.standard_normal(x.shape).astype(dtype)
        tx = torch.tensor(x, requires_grad=True)
        tm.zero_grad()
        ty = tm(tx)
        ty.backward(torch.from_numpy(dy))
        y = m(x)
        dx = m.backward(dy)
        assert y.dtype == dtype and dx.dtype == dtype
        np.testing.assert_allclose(y, ty.detach().numpy(), **tol(dtype))
        np.testing.assert_allclose(dx, tx.grad.numpy(), **tol(dtype))
        assert list(m.grads) == names
        tgrads = {k: p.grad.numpy() for k, p in tm.named_parameters()}
        for k in names:
            assert m.grads[k].shape == m.params[k].shape and m.grads[k].dtype == dtype
            np.testing.assert_allclose(m.grads[k], tgrads[k], **tol(dtype))
        # one SGD step on both, ours in place (optimizers hold these arrays)
        held = {k: p for k, p in m.params.items()}
        for k in names:
            m.params[k] -= lr * m.grads[k]
            assert m.params[k] is held[k]
        with torch.no_grad():
            for p in tm.parameters():
                p -= lr * p.grad
        for k, p in tm.named_parameters():
            np.testing.assert_allclose(m.params[k], p.detach().numpy(), **tol(dtype))


@pytest.mark.parametrize("ours_cls,torch_cls,kwargs", LAYERS)
def test_state_dict_keys_roundtrip_and_from_torch(ours_cls, torch_cls, kwargs):
    rng = np.random.default_rng(1)
    shape = (3, 8)
    tm = torch_cls(shape, **kwargs)
    with torch.no_grad():
        for p in tm.parameters():
            p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(3)))
    m = ours_cls(shape, **kwargs)
    assert list(m.state_dict()) == list(tm.state_dict())
    converted = {k: v.detach().numpy() for k, v in tm.state_dict().items()}
    held = dict(m.params)
    assert m.load_state_dict(converted) is m
    for k in converted:
        np.testing.assert_array_equal(m.state_dict()[k], converted[k])
        assert m.params[k] is held[k]  # loaded into the existing arrays
    x = rng.standard_normal((4,) + shape).astype(np.float32)
    np.testing.assert_allclose(m(x), tm(torch.from_numpy(x)).detach().numpy(), rtol=1e-5, atol=1e-5)
    # state_dict returns copies
    sd = m.state_dict()
    for k in sd:
        sd[k] += 1.0
        assert not np.array_equal(sd[k], m.params[k])
    # round trip into a fresh layer
    m2 = ours_cls(shape, **kwargs).load_state_dict(m.state_dict())
    for k, a in m.state_dict().items():
        np.testing.assert_array_equal(m2.state_dict()[k], a)
    np.testing.assert_array_equal(m2(x), m(x))


def _layer_with_random_params():
    m = nn.LayerNorm(6)
    rng = np.random.default_rng(2)
    for p in m.params.values():
        p[...] = rng.standard_normal(p.shape)
    return m


@pytest.mark.parametrize("bad", [
    pytest.param(lambda sd: sd.pop("bias"), id="missing"),
    pytest.param(lambda sd: sd.update(extra=np.zeros(6, np.float32)), id="unexpected"),
    pytest.param(lambda sd: sd.update(bias=np.zeros(7, np.float32)), id="bias-shape"),
    pytest.param(lambda sd: sd.update(weight=np.zeros((6, 1), np.float32)), id="weight-shape"),
    pytest.param(lambda sd: sd.update(bias=np.array(["a"] * 6)), id="bias-str"),
])
def test_bad_state_dict_raises_and_leaves_layer_unchanged(bad):
    m = _layer_with_random_params()
    before = m.state_dict()
    sd = {k: v + 10.0 for k, v in before.items()}  # valid new values, then one defect
    bad(sd)
    with pytest.raises((KeyError, ValueError, TypeError, RuntimeError)):
        m.load_state_dict(sd)
    for k, a in before.items():
        np.testing.assert_array_equal(m.params[k], a)


def test_non_strict_load_fills_present_keys():
    m = _layer_with_random_params()
    before = m.state_dict()
    m.load_state_dict({"weight": np.full(6, 2.0, np.float32), "extra": 1}, strict=False)
    np.testing.assert_array_equal(m.params["weight"], 2.0)
    np.testing.assert_array_equal(m.params["bias"], before["bias"])


@pytest.mark.parametrize("cls", [nn.LayerNorm, nn.RMSNorm])
def test_train_eval(backend, cls):
    rng = np.random.default_rng(3)
    m = cls(8)
    assert m.training
    x = rng.standard_normal((4, 8)).astype(np.float32)
    with pytest.raises(RuntimeError):  # no forward yet
        m.backward(np.ones_like(x))
    y_train = m(x)
    assert m.eval() is m and not m.training
    y_eval = m(x)
    np.testing.assert_array_equal(y_eval, y_train)  # no running statistics: same output
    with pytest.raises(RuntimeError):  # the eval forward left nothing to differentiate
        m.backward(np.ones_like(x))
    m.train()
    assert m.training
    m(x)
    dx = m.backward(np.ones_like(x))
    assert dx.shape == x.shape and np.isfinite(dx).all()
    assert m.train(False) is m and not m.training


@pytest.mark.parametrize("cls", [nn.LayerNorm, nn.RMSNorm])
def test_dtype_and_shape_checks(backend, cls):
    m32, m64 = cls(8), cls(8, dtype=np.float64)
    assert all(p.dtype == np.float32 for p in m32.params.values())
    assert all(p.dtype == np.float64 for p in m64.params.values())
    x = np.ones((2, 8))
    assert m64(x).dtype == np.float64
    for bad in (x, x.astype(np.int64), x.astype(np.float16)):
        with pytest.raises(TypeError):
            m32(bad)
    with pytest.raises(TypeError):
        m64(x.astype(np.float32))
    with pytest.raises(ValueError):
        m32(np.ones((2, 7), np.float32))
    with pytest.raises(ValueError):
        cls((2, 8))(np.ones((8,), np.float32))  # fewer dims than normalized_shape
    with pytest.raises(ValueError):
        cls((2, 8))(np.ones((3, 8, 2), np.float32))
    with pytest.raises(TypeError):
        cls(8, dtype=np.int32)
    with pytest.raises(TypeError):
        cls(8, dtype=np.float16)
