"""fastnorm.nn layers with CUDA device arrays, in numba's CUDA simulator (or on a GPU): a device
input runs the layer's numba.cuda functional op; ``to_device()`` moves params and buffers; a
layer on the device refuses host input (never a silent copy). Tiny shapes."""
import os

os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

cuda = pytest.importorskip("numba.cuda")
from numba import config  # noqa: E402

if not config.ENABLE_CUDASIM and not cuda.is_available():
    pytest.skip("numba.cuda was imported without the simulator and there is no GPU", allow_module_level=True)

from fastnorm import nn, optim  # noqa: E402
from fastnorm._dispatch import on_device  # noqa: E402


@pytest.mark.parametrize("make,shape", [
    (lambda: nn.LayerNorm(6), (3, 6)),
    (lambda: nn.BatchNorm2d(3), (2, 3, 2, 2)),
    (lambda: nn.InstanceNorm2d(3, affine=True), (3, 2, 2)),  # unbatched
    (lambda: nn.GroupNorm(2, 4), (2, 4, 3)),
    (lambda: nn.Dropout(0.3, seed=5), (3, 6)),
])
def test_float32_layers_on_device_match_the_cpu(make, shape):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    cpu, dev = make(), make().to_device()
    y = dev(cuda.to_device(x))
    dx = dev.backward(cuda.to_device(dy))
    assert on_device(y) and on_device(dx) and y.dtype == np.float32
    np.testing.assert_allclose(y.copy_to_host(), cpu(x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dx.copy_to_host(), cpu.backward(dy), rtol=1e-5, atol=1e-5)
    for k, g in cpu.grads.items():
        assert on_device(dev.grads[k])
        np.testing.assert_allclose(dev.grads[k].copy_to_host(), g, rtol=1e-5, atol=1e-5)
    for k, a in cpu.state_dict().items():  # host copies, running statistics included
        np.testing.assert_allclose(dev.state_dict()[k], a, rtol=1e-5, atol=1e-6)


def test_device_layer_refuses_host_input_and_trains_with_an_optimizer():
    layer = nn.LayerNorm(4).to_device()
    assert all(on_device(a) for a in layer.params.values())
    with pytest.raises(TypeError, match="holds device params"):
        layer(np.ones((2, 4), np.float32))
    with pytest.raises(TypeError, match="float32"):
        layer(cuda.to_device(np.ones((2, 4))))
    opt = optim.SGD(layer.params, lr=0.5)
    x = cuda.to_device(np.arange(8, dtype=np.float32).reshape(2, 4))
    layer(x)
    layer.backward(cuda.to_device(np.ones((2, 4), np.float32)))
    opt.step(layer.grads)
    np.testing.assert_allclose(layer.params["bias"].copy_to_host(), -1.0)
    layer.load_state_dict({"weight": np.full(4, 2.0, np.float32), "bias": np.zeros(4, np.float32)})
    assert on_device(layer.params["weight"])
    np.testing.assert_array_equal(layer.params["weight"].copy_to_host(), 2.0)
