"""fastnorm.optim.functional and the fastnorm.optim classes on CUDA device arrays, in numba's CUDA simulator (or on a GPU):
the same steps as the CPU kernels, to an ulp or two (the simulator evaluates sqrt in float64;
a GPU may contract other multiply-adds). Tiny shapes: the simulator is slow."""
import os

os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

cuda = pytest.importorskip("numba.cuda")
from numba import config  # noqa: E402

if not config.ENABLE_CUDASIM and not cuda.is_available():
    pytest.skip("numba.cuda was imported without the simulator and there is no GPU", allow_module_level=True)

from fastnorm import optim  # noqa: E402
from fastnorm._dispatch import on_device  # noqa: E402
from fastnorm.optim import functional as F  # noqa: E402

RTOL = {np.float32: 1e-6, np.float64: 1e-14}

CASES = {
    "sgd": lambda a, first: F.sgd_(a[0], a[1], a[2], lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1,
                                   first_step=first),
    "sgd_dampening_max": lambda a, first: F.sgd_(a[0], a[1], a[2], lr=0.1, momentum=0.5, dampening=0.2,
                                                 maximize=True, first_step=first),
    "sgd_plain": lambda a, first: F.sgd_(a[0], a[1], None, lr=0.1),
    "adagrad": lambda a, first: F.adagrad_(a[0], a[1], a[2], 2, lr=0.1, lr_decay=0.1, weight_decay=0.1),
    "adadelta": lambda a, first: F.adadelta_(a[0], a[1], a[2], a[3], lr=0.5, weight_decay=0.1, maximize=True),
    "rmsprop": lambda a, first: F.rmsprop_(a[0], a[1], a[2], weight_decay=0.1),
    "rmsprop_centered_momentum": lambda a, first: F.rmsprop_(a[0], a[1], a[2], centered=True, momentum=0.5,
                                                             grad_avg=a[3], momentum_buffer=a[4]),
    "adam": lambda a, first: F.adam_(a[0], a[1], a[2], a[3], 3, lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8,
                                     weight_decay=0.1),
    "adamw_amsgrad_max": lambda a, first: F.adam_(a[0], a[1], a[2], a[3], 3, lr=0.01, beta1=0.3, beta2=0.9,
                                                  eps=1e-8, weight_decay=0.1, decoupled=True,
                                                  max_exp_avg_sq=a[4], maximize=True),
}


def make(dtype, n=45):
    rng = np.random.default_rng(0)
    a = [rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype)] + \
        [np.abs(rng.standard_normal(n)).astype(dtype) for _ in range(3)]
    a[3][:] = 0  # grad_avg starts at 0 (square_avg >= grad_avg^2 then holds)
    return a


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", list(CASES))
def test_device_step_equals_the_cpu_step(name, dtype):
    run = CASES[name]
    cpu = make(dtype)
    dev = [cuda.to_device(a) for a in cpu]
    for first in (True, False):  # two steps: sgd's buffer initialisation, then its update
        out = run(dev, first)
        run(cpu, first)
    assert out is dev[0]
    for d, c in zip(dev, cpu):
        np.testing.assert_allclose(d.copy_to_host(), c, rtol=RTOL[dtype], atol=RTOL[dtype])


def test_host_grad_is_copied_and_host_state_refused():
    p = cuda.to_device(np.ones(8, np.float32))
    m = cuda.to_device(np.zeros(8, np.float32))
    v = cuda.to_device(np.zeros(8, np.float32))
    F.adam_(p, np.ones(8, np.float32), m, v, 1, lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8)
    np.testing.assert_allclose(p.copy_to_host(), 0.9, rtol=1e-6)
    with pytest.raises(TypeError, match="exp_avg must be a device array"):
        F.adam_(p, np.ones(8, np.float32), np.zeros(8, np.float32), v, 2, lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8)
    with pytest.raises(TypeError, match="dtype"):
        F.adam_(p, np.ones(8), m, v, 2, lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8)
    with pytest.raises(ValueError, match="shape"):
        F.sgd_(p, np.ones(9, np.float32), lr=0.1)


# ---------------------------------------------------------------- the optimizer classes


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("make", [
    lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01),
    lambda ps: optim.Adagrad(ps, lr=0.1, lr_decay=0.01),
    lambda ps: optim.Adadelta(ps, weight_decay=0.1, maximize=True),
    lambda ps: optim.RMSprop(ps, momentum=0.5, centered=True),
    lambda ps: optim.Adam([{"params": ps[:1], "lr": 0.01}, {"params": ps[1:]}], amsgrad=True),
    lambda ps: optim.AdamW(ps, lr=0.1),
], ids=["sgd", "adagrad", "adadelta", "rmsprop", "adam_groups", "adamw"])
def test_optimizer_classes_step_device_params_like_the_cpu(make, dtype):
    rng = np.random.default_rng(3)
    host = [rng.standard_normal(33).astype(dtype), rng.standard_normal((4, 5)).astype(dtype)]
    dev = [cuda.to_device(p) for p in host]
    cpu_opt, dev_opt = make(host), make(dev)
    for _ in range(3):
        grads = [rng.standard_normal(p.shape).astype(dtype) for p in host]
        cpu_opt.step(grads)
        dev_opt.step([cuda.to_device(grads[0]), grads[1]])  # a host grad is copied over
    for d, h in zip(dev, host):
        np.testing.assert_allclose(d.copy_to_host(), h, rtol=10 * RTOL[dtype], atol=10 * RTOL[dtype])
    state = dev_opt.state_dict()
    for k, st in state["state"].items():
        for name, a in st.items():
            if name != "step" and a is not None:
                assert on_device(a), name  # the state lives on the device
    again = make([cuda.to_device(p) for p in host])
    again.load_state_dict(cpu_opt.state_dict())  # host state loads onto the device
    assert all(on_device(a) for st in again.state.values() for n, a in st.items()
               if n != "step" and a is not None)


def test_optimizer_classes_refuse_mixed_host_and_device():
    host = np.zeros(3)
    with pytest.raises(TypeError, match="device array but its param is a host array"):
        optim.SGD([host], lr=0.1).step([cuda.to_device(np.ones(3))])
    with pytest.raises(TypeError, match="dtype"):
        optim.Adam([cuda.to_device(np.zeros(3))]).step([np.ones(3, np.float32)])
