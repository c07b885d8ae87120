"""nn.Linear against torch.nn.Linear: forward, backward (dx, dweight, dbias), state_dict, init."""
import numpy as np
import pytest
import torch

from fastnorm import nn


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(5, 7), (2, 3, 7), (7,)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_torch(dtype, shape, bias):
    rng = np.random.default_rng(0)
    theirs = torch.nn.Linear(7, 4, bias=bias, dtype=torch.float32 if dtype == np.float32 else torch.float64)
    ours = nn.Linear(7, 4, bias=bias, dtype=dtype, seed=1)
    ours.load_state_dict({k: t.detach().numpy() for k, t in theirs.state_dict().items()})
    assert set(ours.state_dict()) == set(theirs.state_dict())
    x = rng.standard_normal(shape).astype(dtype)
    xt = torch.tensor(x, requires_grad=True)
    yt = theirs(xt)
    y = ours(x)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=tol, atol=tol)
    dy = rng.standard_normal(y.shape).astype(dtype)
    yt.backward(torch.tensor(dy))
    dx = ours.backward(dy)
    assert dx.dtype == dtype and ours.grads["weight"].dtype == dtype
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=tol, atol=tol)
    for name, p in theirs.named_parameters():
        np.testing.assert_allclose(ours.grads[name], p.grad.numpy(), rtol=tol, atol=tol)
    assert set(ours.grads) == set(ours.params)


def test_linear_init_is_torch_bounds_and_seeded():
    a, b = nn.Linear(64, 32, seed=3), nn.Linear(64, 32, seed=3)
    assert np.array_equal(a.params["weight"], b.params["weight"])
    assert np.array_equal(a.params["bias"], b.params["bias"])
    assert not np.array_equal(a.params["weight"], nn.Linear(64, 32, seed=4).params["weight"])
    bound = 1 / 8
    w = a.params["weight"]
    assert w.shape == (32, 64) and np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound
    assert abs(float(w.std()) - bound / np.sqrt(3)) < 0.01


def test_linear_bad_input():
    fc = nn.Linear(3, 2)
    with pytest.raises(ValueError, match="must end with 3 features"):
        fc(np.ones((2, 4), np.float32))
    with pytest.raises(TypeError, match="float32"):
        fc(np.ones((2, 3), np.float64))
    fc(np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match="does not match"):
        fc.backward(np.ones((2, 3), np.float32))
    with pytest.raises(RuntimeError, match="forward call in training mode"):
        nn.Linear(3, 2).backward(np.ones((1, 2), np.float32))
