"""nn.BatchNorm*d, nn.InstanceNorm*d, nn.GroupNorm against torch.nn: several training steps
(outputs, gradients and running statistics compared after each), then eval; every flag."""
import numpy as np
import pytest
import torch

from fastnorm import nn

TOL = {np.float32: 2e-5, np.float64: 1e-10}


def close(a, b, dtype, scale=1.0):
    t = TOL[dtype] * scale
    b = np.asarray(b)
    np.testing.assert_allclose(a, b, rtol=t, atol=t * max(1.0, np.abs(b).max(initial=0)))


def torch_dtype(dtype):
    return torch.float32 if dtype == np.float32 else torch.float64


def run_steps(ours, theirs, shapes, dtype, seed=0, steps=3):
    """Training steps (forward, backward, an SGD step on the affine params), each compared;
    then eval forwards. Both layers start from the same state."""
    rng = np.random.default_rng(seed)
    ours.load_state_dict({k: t.numpy() for k, t in theirs.state_dict().items()})
    for step in range(steps + 2):
        training = step < steps
        ours.train(training)
        theirs.train(training)
        shape = shapes[step % len(shapes)]
        x = (3 * rng.standard_normal(shape) + step).astype(dtype)
        dy = rng.standard_normal(shape).astype(dtype)
        xt = torch.tensor(x, requires_grad=True)
        yt = theirs(xt)
        y = ours(x)
        close(y, yt.detach().numpy(), dtype, 10)
        for k, t in theirs.state_dict().items():
            mine = ours.state_dict()[k]
            assert mine.shape == tuple(t.shape), k
            if k == "num_batches_tracked":
                assert int(mine) == int(t), k
            else:
                close(mine, t.numpy(), dtype, 10)
        if not training:
            continue
        yt.backward(torch.tensor(dy))
        dx = ours.backward(dy)
        close(dx, xt.grad.numpy(), dtype, 50)
        for name, p in theirs.named_parameters():
            close(ours.grads[name], p.grad.numpy(), dtype, 50)
        with torch.no_grad():
            for name, p in theirs.named_parameters():
                p -= 0.1 * p.grad
                p.grad = None
        for name in ours.params:
            ours.params[name] -= (0.1 * ours.grads[name]).astype(dtype)
    assert set(ours.state_dict()) == set(theirs.state_dict())


BN = {1: (nn.BatchNorm1d, torch.nn.BatchNorm1d, [(6, 4), (5, 4, 7)]),
      2: (nn.BatchNorm2d, torch.nn.BatchNorm2d, [(3, 4, 5, 6), (2, 4, 7, 3)]),
      3: (nn.BatchNorm3d, torch.nn.BatchNorm3d, [(2, 4, 3, 4, 5)])}


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("track", [True, False])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("dim", BN)
def test_batch_norm_layers_match_torch(backend, dim, momentum, affine, track, dtype):
    ours_cls, torch_cls, shapes = BN[dim]
    kw = dict(eps=1e-4, momentum=momentum, affine=affine, track_running_stats=track)
    run_steps(ours_cls(4, dtype=dtype, **kw), torch_cls(4, dtype=torch_dtype(dtype), **kw), shapes, dtype)


IN = {1: (nn.InstanceNorm1d, torch.nn.InstanceNorm1d, [(3, 4, 9), (4, 11)]),
      2: (nn.InstanceNorm2d, torch.nn.InstanceNorm2d, [(2, 4, 5, 6), (4, 3, 5)]),
      3: (nn.InstanceNorm3d, torch.nn.InstanceNorm3d, [(2, 4, 3, 4, 5)])}


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("track", [True, False])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("dim", IN)
def test_instance_norm_layers_match_torch(backend, dim, affine, track, dtype):
    ours_cls, torch_cls, shapes = IN[dim]
    kw = dict(eps=1e-4, momentum=0.2, affine=affine, track_running_stats=track)
    run_steps(ours_cls(4, dtype=dtype, **kw), torch_cls(4, dtype=torch_dtype(dtype), **kw), shapes, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("groups", [1, 2, 6])
def test_group_norm_layer_matches_torch(backend, groups, affine, dtype):
    kw = dict(eps=1e-4, affine=affine)
    run_steps(nn.GroupNorm(groups, 6, dtype=dtype, **kw),
              torch.nn.GroupNorm(groups, 6, dtype=torch_dtype(dtype), **kw),
              [(3, 6, 4, 5), (2, 6, 7)], dtype)


def test_channels_last_batch_norm_matches_nchw(backend):
    rng = np.random.default_rng(1)
    a, b = nn.BatchNorm2d(5), nn.BatchNorm2d(5, axis=-1)
    for _ in range(3):
        x = rng.standard_normal((4, 5, 6, 7)).astype(np.float32) * 2 + 1
        y = a(x)
        yl = b(np.ascontiguousarray(x.transpose(0, 2, 3, 1)))
        np.testing.assert_allclose(yl.transpose(0, 3, 1, 2), y, rtol=1e-6, atol=1e-6)
        dy = rng.standard_normal(x.shape).astype(np.float32)
        dx = a.backward(dy)
        dxl = b.backward(np.ascontiguousarray(dy.transpose(0, 2, 3, 1)))
        np.testing.assert_allclose(dxl.transpose(0, 3, 1, 2), dx, rtol=1e-5, atol=1e-5)
    for k in ("running_mean", "running_var"):
        np.testing.assert_allclose(a.buffers[k], b.buffers[k], rtol=1e-6)


def test_layer_errors_match_torch():
    bn = nn.BatchNorm1d(3)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        bn(np.ones((1, 3), np.float32))
    assert int(bn.buffers["num_batches_tracked"]) == 0  # nothing counted for a refused batch
    with pytest.raises(ValueError, match=r"expected 2D or 3D input \(got 4D input\)"):
        bn(np.ones((2, 3, 4, 5), np.float32))
    with pytest.raises(ValueError, match="channels"):
        bn(np.ones((2, 4), np.float32))
    with pytest.raises(TypeError, match="float32"):
        bn(np.ones((2, 3)))
    bn.eval()
    bn(np.ones((1, 3), np.float32))  # eval: one value per channel is fine
    with pytest.raises(ValueError, match="divisible"):
        nn.GroupNorm(4, 6)
    with pytest.raises(ValueError, match=r"\(N, 6, \*\)"):
        nn.GroupNorm(2, 6)(np.ones((2, 4, 3), np.float32))
    with pytest.raises(RuntimeError, match="forward call in training mode"):
        nn.InstanceNorm2d(3).backward(np.ones((1, 3, 2, 2), np.float32))
    with pytest.raises(ValueError, match="more than 1 spatial element"):
        nn.InstanceNorm1d(3)(np.ones((2, 3, 1), np.float32))
