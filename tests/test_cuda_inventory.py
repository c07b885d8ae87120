"""Every public op with CUDA device arrays, in numba's CUDA simulator (or on a GPU): it runs on
the device and equals the CPU result, or it raises NotImplementedError naming the op. Never a
silent copy to the host, never a crash.

``INVENTORY`` is the table (also README's "Device status"): op -> (status, run). ``run(A)``
calls the op with its arrays passed through ``A``: the identity for the CPU run,
``cuda.to_device`` for the device run. KERNEL ops: both runs are compared (results back with
copy_to_host, tight tolerances: the inputs are float64) and every array result of the device
run must be a device array. NO_KERNEL ops: the device run raises NotImplementedError whose
message starts with ``fastnorm.<op>``. HOST ops take no array (a shape, a seed, a name).
``test_inventory_covers_every_public_op`` fails when a new public op is not in the table.
Tiny shapes: the simulator runs every thread as a Python thread.
"""
import os

os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

cuda = pytest.importorskip("numba.cuda")
from numba import config  # noqa: E402

if not config.ENABLE_CUDASIM and not cuda.is_available():
    pytest.skip("numba.cuda was imported without the simulator and there is no GPU", allow_module_level=True)

import fastnorm.functional as fn  # noqa: E402
from fastnorm import init, nn, optim, random as fr  # noqa: E402
from fastnorm._dispatch import on_device  # noqa: E402
from fastnorm.optim import functional as OF  # noqa: E402

KERNEL, NO_KERNEL, HOST = "kernel", "NotImplementedError", "host (no array argument)"

_rng = np.random.default_rng(0)
X = _rng.standard_normal((3, 8))           # rows
X4 = _rng.standard_normal((2, 4, 3))       # (N, C, L)
W = _rng.standard_normal((5, 8))           # cosine weight (out, in)
DYC = _rng.standard_normal((3, 5))         # cosine upstream gradient
P = _rng.random((3, 8)) + 0.1              # distributions
Q = _rng.random((3, 8)) + 0.1
G = _rng.standard_normal((3, 8))           # gradients
LABELS = np.array([0, 7, -100])
LL = np.array([-10.0, -12.5, -9.0])        # log-likelihoods
C8 = np.ones(8)


def _host(a):
    return a


def _dev(a):
    return cuda.to_device(np.ascontiguousarray(a))


_host.device = False
_dev.device = True


def _inplace(op, *arrays, **kw):
    """Runs ``op(list of fresh copies, ...)`` and returns (its result, the arrays)."""
    def run(A):
        items = [A(a.copy()) for a in arrays]
        return op(items, **kw), items
    return run


def _pairs(op, **kw):
    def run(A):
        ps, gs = [A(X.copy()), A(W.copy())], [A(G.copy()), A(W[::-1].copy())]
        return op(ps, gs, **kw), gs
    return run


def _optim_functional(op, nstate, *args, **kw):
    def run(A):
        arrays = [A(X.copy()), A(G.copy())] + [A(np.abs(G) * (i + 1) * 0.1) for i in range(nstate)]
        op(arrays[0], arrays[1], *arrays[2:], *args, **kw)
        return arrays
    return run


def _optimizer(cls, **kw):
    def run(A):
        params = [A(X.copy()), A(W.copy())]
        opt = cls(params, **kw)
        for s in range(2):
            opt.step([A(G * (s + 1)), A(W[::-1] * (s + 1))])
        return params
    return run


def _layer(make, shape, dy_shape=None):
    x = _rng.standard_normal(shape)
    dy = _rng.standard_normal(dy_shape or shape)

    def run(A):
        layer = make()
        if A.device:
            layer.to_device()
        y = layer(A(x))
        dx = layer.backward(A(dy))
        return y, dx, [layer.grads[k] for k in sorted(layer.grads)]
    return run


def _weight_norm_layer(A):
    layer = nn.WeightNorm(W.astype(np.float64))
    if A.device:
        layer.to_device()
    w = layer()
    layer.backward(A(W * 0.5))
    return w, [layer.grads[k] for k in sorted(layer.grads)]


def _init(op, *args):
    def run(A):
        return op(A(np.zeros((5, 8))), *args, seed=3)
    return run


def _random(op):
    def run(A):
        return op((5, 8), seed=4, offset=3, out=A(np.zeros((5, 8))))
    return run


BN_STATE = {"weight": np.ones(5), "bias": np.zeros(5), "running_mean": np.zeros(5),
            "running_var": np.ones(5)}

INVENTORY = {
    # ---- normalization
    "functional.layer_norm": (KERNEL, lambda A: fn.layer_norm(A(X), A(C8), A(C8 * 0.5))),
    "functional.layer_norm_backward": (KERNEL, lambda A: fn.layer_norm_backward(A(G), A(X), A(C8), A(C8))),
    "functional.rms_norm": (KERNEL, lambda A: fn.rms_norm(A(X), A(C8))),
    "functional.rms_norm_backward": (KERNEL, lambda A: fn.rms_norm_backward(A(G), A(X), A(C8))),
    "functional.batch_norm": (KERNEL, lambda A: fn.batch_norm(A(X4), training=True)),
    "functional.batch_norm_backward": (KERNEL, lambda A: fn.batch_norm_backward(A(X4), A(X4), training=True)),
    "functional.instance_norm": (KERNEL, lambda A: fn.instance_norm(A(X4))),
    "functional.instance_norm_backward": (KERNEL, lambda A: fn.instance_norm_backward(A(X4), A(X4))),
    "functional.group_norm": (KERNEL, lambda A: fn.group_norm(A(X4), 2)),
    "functional.group_norm_backward": (KERNEL, lambda A: fn.group_norm_backward(A(X4), A(X4), 2)),
    "functional.moments": (KERNEL, lambda A: tuple(fn.moments(A(X4), axis=(0, 2)))),
    "functional.merge_moments": (NO_KERNEL, lambda A: fn.merge_moments(
        fn.moments(A(X4), axis=(0, 2)), fn.moments(A(X4), axis=(0, 2)))),
    "functional.Moments": (HOST, None),  # the record type moments returns
    "functional.fold_batch_norm": (NO_KERNEL, lambda A: fn.fold_batch_norm(A(W), None, BN_STATE)),
    "functional.local_response_norm": (KERNEL, lambda A: fn.local_response_norm(A(X4), 3)),
    "functional.local_response_norm_backward": (KERNEL, lambda A: fn.local_response_norm_backward(A(X4), A(X4), 3)),
    "functional.lp_normalize": (KERNEL, lambda A: fn.lp_normalize(A(X))),
    "functional.lp_normalize_backward": (KERNEL, lambda A: fn.lp_normalize_backward(A(G), A(X))),
    "functional.weight_norm": (KERNEL, lambda A: fn.weight_norm(A(W), A(np.arange(1.0, 6.0)))),
    "functional.weight_norm_backward": (KERNEL, lambda A: fn.weight_norm_backward(A(W * 0.5), A(W), A(np.arange(1.0, 6.0)))),
    "functional.cosine_linear": (KERNEL, lambda A: fn.cosine_linear(A(X), A(W))),
    "functional.cosine_linear_backward": (KERNEL, lambda A: fn.cosine_linear_backward(A(DYC), A(X), A(W))),
    # ---- dropout and regularization
    "functional.dropout": (KERNEL, lambda A: fn.dropout(A(X), 0.4, seed=7)),
    "functional.dropout_backward": (KERNEL, lambda A: fn.dropout_backward(A(X), 0.4, 7)),
    "functional.dropout_mask": (HOST, None),  # takes a shape
    "functional.gaussian_dropout": (KERNEL, lambda A: fn.gaussian_dropout(A(X), 0.4, seed=7)),
    "functional.gaussian_dropout_backward": (KERNEL, lambda A: fn.gaussian_dropout_backward(A(X), 0.4, 7)),
    "functional.l1_penalty": (KERNEL, lambda A: fn.l1_penalty([A(X), A(W)])),
    "functional.l2_penalty": (KERNEL, lambda A: fn.l2_penalty({"a": A(X), "b": A(W)})),
    "functional.l1_penalty_grad_": (KERNEL, _pairs(fn.l1_penalty_grad_, coeff=0.3)),
    "functional.l2_penalty_grad_": (KERNEL, _pairs(fn.l2_penalty_grad_, coeff=0.3)),
    "functional.l1_prox_": (KERNEL, _inplace(fn.l1_prox_, X, W, threshold=0.5)),
    "functional.grad_norm": (KERNEL, lambda A: fn.grad_norm([A(X), A(W)], 3.0)),
    "functional.clip_grad_norm_": (KERNEL, _inplace(fn.clip_grad_norm_, X, W, max_norm=1.0)),
    # ---- divergences and losses
    "functional.entropy": (KERNEL, lambda A: fn.entropy(A(P))),
    "functional.kl_div": (KERNEL, lambda A: fn.kl_div(A(P), A(Q))),
    "functional.cross_entropy": (KERNEL, lambda A: fn.cross_entropy(A(P), A(Q))),
    "functional.js_div": (KERNEL, lambda A: fn.js_div(A(P), A(Q), base=2)),
    "functional.js_distance": (KERNEL, lambda A: fn.js_distance(A(P), A(Q))),
    "functional.wasserstein_1d": (NO_KERNEL, lambda A: fn.wasserstein_1d(A(P[0]), A(Q[0]))),
    "functional.softmax": (KERNEL, lambda A: fn.softmax(A(X * 30))),
    "functional.log_softmax": (KERNEL, lambda A: fn.log_softmax(A(X * 30))),
    "functional.softmax_cross_entropy": (KERNEL, lambda A: fn.softmax_cross_entropy(
        A(X), A(LABELS), label_smoothing=0.1)),
    "functional.softmax_cross_entropy_backward": (KERNEL, lambda A: fn.softmax_cross_entropy_backward(
        2.0, A(X), LABELS, reduction="sum")),
    "functional.aic": (NO_KERNEL, lambda A: fn.aic(A(LL), 2)),
    "functional.bic": (NO_KERNEL, lambda A: fn.bic(A(LL), 2, 100)),
    "functional.select_model": (NO_KERNEL, lambda A: fn.select_model(A(LL), np.array([1, 2, 3]))),
    # ---- optimizers
    "optim.functional.sgd_": (KERNEL, _optim_functional(OF.sgd_, 1, lr=0.1, momentum=0.9)),
    "optim.functional.adagrad_": (KERNEL, _optim_functional(OF.adagrad_, 1, 2, lr=0.1)),
    "optim.functional.adadelta_": (KERNEL, _optim_functional(OF.adadelta_, 2, weight_decay=0.1)),
    "optim.functional.rmsprop_": (KERNEL, _optim_functional(OF.rmsprop_, 1, momentum=0.0)),
    "optim.functional.adam_": (KERNEL, _optim_functional(OF.adam_, 2, 3, lr=0.01, beta1=0.9,
                                                         beta2=0.999, eps=1e-8)),
    "optim.SGD": (KERNEL, _optimizer(optim.SGD, lr=0.1, momentum=0.9, nesterov=True)),
    "optim.Adagrad": (KERNEL, _optimizer(optim.Adagrad, lr=0.1, initial_accumulator_value=0.1)),
    "optim.Adadelta": (KERNEL, _optimizer(optim.Adadelta, weight_decay=0.1)),
    "optim.RMSprop": (KERNEL, _optimizer(optim.RMSprop, momentum=0.5, centered=True)),
    "optim.Adam": (KERNEL, _optimizer(optim.Adam, lr=0.1, amsgrad=True)),
    "optim.AdamW": (KERNEL, _optimizer(optim.AdamW, lr=0.1)),
    # ---- layers (params moved with to_device())
    "nn.LayerNorm": (KERNEL, _layer(lambda: nn.LayerNorm(8, dtype=np.float64), (3, 8))),
    "nn.RMSNorm": (KERNEL, _layer(lambda: nn.RMSNorm(8, dtype=np.float64), (3, 8))),
    "nn.BatchNorm1d": (KERNEL, _layer(lambda: nn.BatchNorm1d(4, dtype=np.float64), (5, 4))),
    "nn.BatchNorm2d": (KERNEL, _layer(lambda: nn.BatchNorm2d(4, dtype=np.float64), (2, 4, 2, 3))),
    "nn.BatchNorm3d": (KERNEL, _layer(lambda: nn.BatchNorm3d(2, dtype=np.float64), (2, 2, 2, 1, 3))),
    "nn.InstanceNorm1d": (KERNEL, _layer(lambda: nn.InstanceNorm1d(
        4, affine=True, track_running_stats=True, dtype=np.float64), (4, 5))),  # unbatched
    "nn.InstanceNorm2d": (KERNEL, _layer(lambda: nn.InstanceNorm2d(4, affine=True, dtype=np.float64), (2, 4, 2, 3))),
    "nn.InstanceNorm3d": (KERNEL, _layer(lambda: nn.InstanceNorm3d(2, dtype=np.float64), (2, 2, 2, 1, 3))),
    "nn.GroupNorm": (KERNEL, _layer(lambda: nn.GroupNorm(2, 4, dtype=np.float64), (2, 4, 3))),
    "nn.LocalResponseNorm": (KERNEL, _layer(lambda: nn.LocalResponseNorm(3, dtype=np.float64), (2, 4, 3))),
    "nn.WeightNorm": (KERNEL, _weight_norm_layer),
    "nn.Dropout": (KERNEL, _layer(lambda: nn.Dropout(0.5, dtype=np.float64, seed=2), (3, 8))),
    "nn.GaussianDropout": (KERNEL, _layer(lambda: nn.GaussianDropout(0.5, dtype=np.float64, seed=2), (3, 8))),
    "nn.Linear": (NO_KERNEL, _layer(lambda: nn.Linear(8, 4, dtype=np.float64, seed=0), (3, 8), (3, 4))),
    "nn.Module": (HOST, None),  # the base class
    # ---- initialization and random numbers
    "init.uniform_": (KERNEL, _init(init.uniform_, -2.0, 2.0)),
    "init.normal_": (KERNEL, _init(init.normal_, 1.0, 3.0)),
    "init.xavier_uniform_": (KERNEL, _init(init.xavier_uniform_)),
    "init.xavier_normal_": (KERNEL, _init(init.xavier_normal_)),
    "init.kaiming_uniform_": (KERNEL, _init(init.kaiming_uniform_)),
    "init.kaiming_normal_": (KERNEL, _init(init.kaiming_normal_)),
    "init.calculate_gain": (HOST, None),
    "init.calculate_fan_in_and_fan_out": (HOST, None),
    "random.uniform": (KERNEL, _random(fr.uniform)),
    "random.normal": (KERNEL, _random(fr.normal)),
    "random.philox4x32_10": (HOST, None),
    "random.manual_seed": (HOST, None),
    "random.next_seed": (HOST, None),
    "random.initial_seed": (HOST, None),
    "random.random_bits": (HOST, None),
}


def _public_ops():
    names = {f"functional.{n}" for n in fn.__all__}
    names |= {f"optim.functional.{n}" for n in OF.__all__}
    names |= {f"optim.{n}" for n in optim.__all__ if n not in ("Optimizer", "to_torch", "functional")}
    names |= {f"nn.{n}" for n in nn.__all__}
    names |= {f"init.{n}" for n in init.__all__}
    names |= {f"random.{n}" for n in fr.__all__}
    return names


def test_inventory_covers_every_public_op():
    assert set(INVENTORY) == _public_ops()


def _flat(result):
    """The arrays and numbers of a result, in order (tuples, lists, dicts flattened)."""
    if isinstance(result, dict):
        result = list(result.values())
    if isinstance(result, (tuple, list)):
        return [a for r in result for a in _flat(r)]
    return [result]


def _check_device_results(dev, cpu):
    d, c = _flat(dev), _flat(cpu)
    assert len(d) == len(c)
    for a, b in zip(d, c):
        if a is None or isinstance(a, (int, np.integer)) and not isinstance(b, np.ndarray):
            assert a == b
            continue
        if isinstance(b, (np.ndarray, float, np.floating)):
            assert on_device(a), f"a host result {type(a).__name__} where the CPU gives {type(b).__name__}"
            a = a.copy_to_host()
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
        assert np.asarray(a).dtype == np.asarray(b).dtype or np.asarray(b).dtype == np.float64


@pytest.mark.parametrize("op", [k for k, (s, _) in INVENTORY.items() if s == KERNEL])
def test_kernel_ops_run_on_the_device_and_equal_the_cpu(op):
    _, run = INVENTORY[op]
    cpu = run(_host)
    dev = run(_dev)
    _check_device_results(dev, cpu)


@pytest.mark.parametrize("op", [k for k, (s, _) in INVENTORY.items() if s == NO_KERNEL])
def test_ops_without_kernel_raise_not_implemented_naming_the_op(op):
    _, run = INVENTORY[op]
    run(_host)  # the CPU path works
    with pytest.raises(NotImplementedError, match=rf"^fastnorm\.{op}: no CUDA kernel yet"):
        run(_dev)


@pytest.mark.parametrize("call", [
    lambda: fn.layer_norm(X, _dev(C8)),
    lambda: fn.kl_div(P, _dev(Q)),
    lambda: fn.cosine_linear(X, _dev(W)),
    lambda: fn.batch_norm(X4, weight=_dev(np.ones(4)), training=True),
], ids=["layer_norm", "kl_div", "cosine_linear", "batch_norm"])
def test_a_device_array_behind_a_host_first_argument_is_refused(call):
    # the op runs on the host (its first array is a host array): a device array among the
    # others would be copied back silently, so it is a TypeError naming the argument
    with pytest.raises(TypeError, match="is a CUDA device array but this call runs on the host"):
        call()
