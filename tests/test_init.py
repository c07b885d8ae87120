"""fastnorm.init: gains and fans as torch.nn.init, bounds and variances by law, seeded."""
import math

import numpy as np
import pytest

import fastnorm
import fastnorm.init as init
from fastnorm import _dispatch

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("name,param", [("linear", None), ("conv2d", None), ("sigmoid", None),
                                        ("tanh", None), ("relu", None), ("leaky_relu", None),
                                        ("leaky_relu", 0.2), ("leaky_relu", 0), ("selu", None),
                                        ("conv_transpose3d", None)])
def test_calculate_gain_as_torch(name, param):
    assert init.calculate_gain(name, param) == torch.nn.init.calculate_gain(name, param)


@pytest.mark.parametrize("shape", [(3, 4), (16, 8, 3, 3), (5, 2, 7), (1, 1, 1, 1, 2)])
def test_fans_as_torch(shape):
    t = torch.empty(shape)
    assert init.calculate_fan_in_and_fan_out(shape) == torch.nn.init._calculate_fan_in_and_fan_out(t)
    assert init.calculate_fan_in_and_fan_out(np.empty(shape)) == init.calculate_fan_in_and_fan_out(shape)


def _check_uniform(w, bound):
    n = w.size
    assert np.abs(w).max() <= bound * (1 + 1e-6)
    assert np.abs(w).max() > bound * 0.999  # the range is filled
    assert abs(w.mean()) < 5 * bound / math.sqrt(3 * n)
    assert abs(w.var() / (bound ** 2 / 3) - 1) < 0.02


def _check_normal(w, std):
    assert abs(w.mean()) < 5 * std / math.sqrt(w.size)
    assert abs(w.std() / std - 1) < 0.02


@pytest.mark.parametrize("shape", [(256, 512), (128, 64, 3, 3)])
def test_xavier(backend, dtype, shape):
    fan_in, fan_out = init.calculate_fan_in_and_fan_out(shape)
    w = np.empty(shape, dtype)
    assert init.xavier_uniform_(w, gain=2.0, seed=1) is w
    _check_uniform(w, 2.0 * math.sqrt(6.0 / (fan_in + fan_out)))
    init.xavier_normal_(w, gain=0.5, seed=2)
    _check_normal(w, 0.5 * math.sqrt(2.0 / (fan_in + fan_out)))
    # torch's bound, from its own code path: every value of torch's draw lies within ours too
    t = torch.nn.init.xavier_uniform_(torch.empty(shape, dtype=torch.float64), gain=2.0)
    assert t.abs().max().item() <= 2.0 * math.sqrt(6.0 / (fan_in + fan_out))


@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
@pytest.mark.parametrize("nonlinearity,a", [("relu", 0), ("leaky_relu", 0.1), ("leaky_relu", 0), ("tanh", 0)])
def test_kaiming(backend, dtype, mode, nonlinearity, a):
    shape = (128, 64, 3, 3)
    fan_in, fan_out = init.calculate_fan_in_and_fan_out(shape)
    fan = fan_in if mode == "fan_in" else fan_out
    std = torch.nn.init.calculate_gain(nonlinearity, a) / math.sqrt(fan)
    w = np.empty(shape, dtype)
    init.kaiming_uniform_(w, a=a, mode=mode, nonlinearity=nonlinearity, seed=3)
    _check_uniform(w, math.sqrt(3.0) * std)
    init.kaiming_normal_(w, a=a, mode=mode, nonlinearity=nonlinearity, seed=4)
    _check_normal(w, std)
    # torch's own draw has the same variance law (a check of our reading of its formula)
    t = torch.nn.init.kaiming_normal_(torch.empty(shape, dtype=torch.float64), a=a, mode=mode,
                                      nonlinearity=nonlinearity)
    assert abs(t.std().item() / std - 1) < 0.03


def test_seeded_reproducible_and_identical_across_backends_threads_layouts():
    shape = (1024, 600)  # above the parallel thresholds
    results = []
    for b in _dispatch.BACKENDS:
        fastnorm.set_backend(b)
        for t in (1, 2):
            fastnorm.set_num_threads(t)
            results.append(init.kaiming_uniform_(np.empty(shape, np.float32), seed=9))
            results.append(init.xavier_normal_(np.empty(shape), seed=9))
    for k, r in enumerate(results[2:]):
        np.testing.assert_array_equal(r, results[k % 2])
    f = init.kaiming_uniform_(np.empty(shape, np.float32, order="F"), seed=9)
    np.testing.assert_array_equal(f, results[0])  # values in C order, whatever the layout
    other = init.kaiming_uniform_(np.empty(shape, np.float32), seed=10)
    assert not np.array_equal(other, results[0])
    fastnorm.random.manual_seed(5)
    a = init.uniform_(np.empty(10), seed=None)
    fastnorm.random.manual_seed(5)
    np.testing.assert_array_equal(init.uniform_(np.empty(10)), a)


def test_uniform_and_normal(dtype):
    w = init.uniform_(np.empty(100000, dtype), -3.0, 1.0, seed=0)
    assert w.min() >= -3.0 and w.max() <= 1.0 and abs(w.mean() + 1.0) < 0.02
    w = init.normal_(np.empty(100000, dtype), 2.0, 0.5, seed=0)
    assert abs(w.mean() - 2.0) < 0.01 and abs(w.std() - 0.5) < 0.01


def test_bad_inputs():
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        init.xavier_uniform_(np.empty(5), seed=0)
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        torch.nn.init.xavier_uniform_(torch.empty(5))
    with pytest.raises(ValueError, match="Mode"):
        init.kaiming_uniform_(np.empty((3, 4)), mode="fan_avg", seed=0)
    with pytest.raises(ValueError, match="Unsupported nonlinearity"):
        init.calculate_gain("gelu")
    with pytest.raises(ValueError, match="negative_slope"):
        init.calculate_gain("leaky_relu", "x")
    with pytest.raises(TypeError, match="float32 or float64"):
        init.uniform_(np.empty(3, np.int32), seed=0)
    with pytest.raises(TypeError, match="numpy.ndarray"):
        init.uniform_([1.0, 2.0], seed=0)
    ro = np.empty((3, 4))
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        init.kaiming_normal_(ro, seed=0)
    empty = np.empty((0, 4))
    assert init.kaiming_uniform_(empty, seed=0) is empty
