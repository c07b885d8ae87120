"""fastnorm.nn.LocalResponseNorm and WeightNorm against torch's modules."""
import numpy as np
import pytest

import fastnorm.functional as fn
from fastnorm import nn

torch = pytest.importorskip("torch")


def test_local_response_norm_layer_matches_torch(backend):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 6, 4, 3)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    layer = nn.LocalResponseNorm(4, alpha=0.5, beta=0.6, k=2.0)
    tl = torch.nn.LocalResponseNorm(4, alpha=0.5, beta=0.6, k=2.0)
    tx = torch.tensor(x, requires_grad=True)
    ty = tl(tx)
    ty.backward(torch.tensor(dy))
    y = layer(x)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.backward(dy), tx.grad.numpy(), rtol=1e-4, atol=1e-6)
    assert layer.grads == {} and layer.state_dict() == {}
    with pytest.raises(TypeError, match="float32"):
        layer(x.astype(np.float64))
    layer.eval()
    layer(x)
    with pytest.raises(RuntimeError, match="forward call in training mode"):
        layer.backward(dy)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.nn.utils.weight_norm is deprecated
def test_weight_norm_layer_state_dict_and_grads_match_torch(backend):
    rng = np.random.default_rng(1)
    lin = torch.nn.Linear(5, 3).double()
    tm = torch.nn.utils.weight_norm(lin)
    with torch.no_grad():
        tm.weight_g.mul_(torch.tensor(rng.uniform(0.5, 2.0, (3, 1))))
    sd = {k: t.detach().numpy() for k, t in tm.state_dict().items() if k.startswith("weight_")}
    wn = nn.WeightNorm(np.zeros((3, 5)), axis=0)
    assert sorted(wn.state_dict()) == ["weight_g", "weight_v"]
    wn.load_state_dict(sd)
    x = torch.tensor(rng.standard_normal((4, 5)))
    out = tm(x)
    dout = torch.tensor(rng.standard_normal(out.shape))
    out.backward(dout)
    w = wn()
    np.testing.assert_allclose(w, tm.weight.detach().numpy(), rtol=1e-12)
    dw = dout.numpy().T @ x.numpy()  # the linear layer's weight gradient
    assert wn.backward(dw) is None
    np.testing.assert_allclose(wn.grads["weight_g"], tm.weight_g.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(wn.grads["weight_v"], tm.weight_v.grad.numpy(), rtol=1e-10, atol=1e-14)
    for k, a in wn.state_dict().items():
        assert a.shape == sd[k].shape


@pytest.mark.parametrize("axis", [0, 1, None])
def test_weight_norm_layer_initializes_to_the_weight(axis):
    weight = np.random.default_rng(2).standard_normal((4, 3, 2)).astype(np.float32)
    wn = nn.WeightNorm(weight, axis=axis)
    np.testing.assert_allclose(wn(), weight, rtol=1e-6, atol=1e-7)
    assert wn.params["weight_g"].shape == ((4, 1, 1) if axis == 0 else (1, 3, 1) if axis == 1 else ())
    assert np.array_equal(wn.weight, fn.weight_norm(wn.params["weight_v"], wn.params["weight_g"], axis=axis))
    assert wn.params["weight_v"] is not weight
