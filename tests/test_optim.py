"""fastnorm.optim against torch.optim (the rule) and float64 NumPy references, on both CPU
backends and several thread counts.

How close to torch: SGD is bit-exact (float32 and float64). The others follow torch's ops one
by one, in the dtype, with the same fused multiply-adds torch's vectorized kernels use, and
agree bit for bit except where torch's vectorized sqrt (SLEEF, not correctly rounded: about
0.7% of elements one ulp off, float32 and float64 alike) differs from the correctly rounded
one; after 20 steps that leaves differences of a few ulp relative to the parameter (centered
RMSprop's sqrt of a difference amplifies it to ~20), hence ``TORCH_ULPS``, and where a parameter
has cancelled to near zero, a few ulp of the tensor's largest element (``atol``).
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)  # small tensors: threads only contend

import fastnorm  # noqa: E402
from fastnorm import optim  # noqa: E402
from fastnorm.optim import functional as F  # noqa: E402

import reference_optim as ref  # noqa: E402

TORCH_ULPS = 64
EXACT = {"SGD"}

CASES = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9)),
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.3, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("SGD", dict(lr=0.1, momentum=0.5, maximize=True)),
    ("Adagrad", dict()),
    ("Adagrad", dict(lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1, weight_decay=0.1)),
    ("Adagrad", dict(lr=0.1, eps=1e-3, maximize=True)),
    ("Adadelta", dict()),
    ("Adadelta", dict(lr=0.5, rho=0.8, weight_decay=0.1, maximize=True)),
    ("RMSprop", dict()),
    ("RMSprop", dict(centered=True)),
    ("RMSprop", dict(alpha=0.9, maximize=True)),
    ("RMSprop", dict(momentum=0.5, weight_decay=0.1)),
    ("RMSprop", dict(lr=0.001, alpha=0.3, centered=True, momentum=0.9, maximize=True)),
    ("Adam", dict()),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.1)),
    ("Adam", dict(amsgrad=True)),
    ("Adam", dict(amsgrad=True, maximize=True)),
    ("Adam", dict(betas=(0.3, 0.9), amsgrad=True, maximize=True, weight_decay=0.01)),
    ("AdamW", dict()),
    ("AdamW", dict(lr=0.01, weight_decay=0.1, amsgrad=True)),
    ("AdamW", dict(maximize=True)),
]
# several small tensors and one cut into several chunks
SHAPES = [(7, 5), (1,), (F.CHUNK + 300,)]


def case_id(case):
    name, kw = case
    return name + "-" + "-".join(f"{k}={v}" for k, v in kw.items())


def assert_close_to_torch(ours, theirs, dtype, exact):
    theirs = np.asarray(theirs)
    if exact:
        np.testing.assert_array_equal(ours, theirs)
    else:
        eps = np.finfo(dtype).eps
        scale = np.abs(theirs).max() if theirs.size else 0.0
        np.testing.assert_allclose(ours, theirs, rtol=TORCH_ULPS * eps, atol=8 * eps * scale)


def run_both(name, kw, dtype, steps=20, seed=0, shapes=SHAPES):
    """(fastnorm optimizer, its params, torch optimizer, torch params) after ``steps`` steps."""
    rng = np.random.default_rng(seed)
    ps = [rng.standard_normal(s).astype(dtype) for s in shapes]
    tps = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in ps]
    ours = getattr(optim, name)(ps, **kw)
    theirs = getattr(torch.optim, name)(tps, **kw)
    for _ in range(steps):
        gs = [rng.standard_normal(s).astype(dtype) for s in shapes]
        for t, g in zip(tps, gs):
            t.grad = torch.from_numpy(g.copy())
        theirs.step()
        ours.step(gs)
    return ours, ps, theirs, tps


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_steps_match_torch(backend, dtype, case):
    name, kw = case
    ours, ps, theirs, tps = run_both(name, kw, dtype)
    for k, (p, t) in enumerate(zip(ps, tps)):
        assert p.dtype == dtype
        assert_close_to_torch(p, t.detach(), dtype, name in EXACT)
        tstate = theirs.state[t]
        ostate = ours.state_dict()["state"].get(k, {})
        assert set(ostate) == set(tstate)
        for key, val in tstate.items():
            if key == "step":
                assert float(ostate[key]) == float(val)
            else:
                assert_close_to_torch(ostate[key], val, dtype, name in EXACT)


@pytest.mark.parametrize("name", ["SGD", "Adagrad", "Adadelta", "RMSprop", "Adam", "AdamW"])
def test_results_do_not_depend_on_backend_or_threads(name):
    kw = {"SGD": dict(lr=0.1, momentum=0.9, nesterov=True), "RMSprop": dict(centered=True, momentum=0.3),
          "Adam": dict(amsgrad=True, weight_decay=0.1)}.get(name, {})
    # above numba's parallel threshold (2^19 elements), many chunks
    shapes = [(600_000,), (3, 1000), (5,)]
    results = []
    for backend in ("numba", "cython"):
        fastnorm.set_backend(backend)
        for threads in (1, 2, 3):
            fastnorm.set_num_threads(threads)
            rng = np.random.default_rng(1)
            ps = [rng.standard_normal(s).astype(np.float32) for s in shapes]
            opt = getattr(optim, name)(ps, **kw)
            for _ in range(3):
                opt.step([rng.standard_normal(s).astype(np.float32) for s in shapes])
            results.append(ps)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


def test_param_groups_with_their_own_hyper_parameters(backend, dtype):
    rng = np.random.default_rng(2)
    shapes = [(4, 3), (10,), (2,)]
    ps = [rng.standard_normal(s).astype(dtype) for s in shapes]
    tps = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in ps]
    ours = optim.Adam([{"params": ps[:2], "lr": 0.1, "amsgrad": True},
                       {"params": ps[2:], "betas": (0.5, 0.9)}], lr=0.01, weight_decay=0.1)
    theirs = torch.optim.Adam([{"params": tps[:2], "lr": 0.1, "amsgrad": True},
                               {"params": tps[2:], "betas": (0.5, 0.9)}], lr=0.01, weight_decay=0.1)
    for step in range(15):
        gs = [rng.standard_normal(s).astype(dtype) for s in shapes]
        for t, g in zip(tps, gs):
            t.grad = torch.from_numpy(g.copy())
        theirs.step()
        ours.step([gs[:2], gs[2:]] if step % 2 else gs)  # per-group lists or one flat list
    for p, t in zip(ps, tps):
        assert_close_to_torch(p, t.detach(), dtype, False)
    sd = ours.state_dict()
    assert [g["params"] for g in sd["param_groups"]] == [[0, 1], [2]]
    assert sd["param_groups"][0]["lr"] == 0.1 and sd["param_groups"][1]["lr"] == 0.01
    assert set(sd["state"][0]) == {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
    assert set(sd["state"][2]) == {"step", "exp_avg", "exp_avg_sq"}
    tsd = theirs.state_dict()
    for ours_g, their_g in zip(sd["param_groups"], tsd["param_groups"]):
        assert ours_g == their_g


def test_dict_params_and_missing_grads_skip(backend):
    w = np.ones(3)
    b = np.zeros(2)
    opt = optim.SGD({"weight": w, "bias": b}, lr=0.5, momentum=0.9)
    opt.step({"weight": np.ones(3)})
    np.testing.assert_array_equal(w, 0.5)
    np.testing.assert_array_equal(b, 0.0)
    assert 1 not in opt.state_dict()["state"]
    opt.step({"weight": np.ones(3), "bias": np.ones(2)})
    np.testing.assert_array_equal(b, -0.5)
    np.testing.assert_allclose(w, 0.5 - 0.5 * 1.9)
    with pytest.raises(ValueError, match="unknown params"):
        opt.step({"kernel": np.ones(3)})


@pytest.mark.parametrize("name", ["SGD", "Adagrad", "Adadelta", "RMSprop", "Adam"])
def test_zero_gradient_without_decay_leaves_params_unchanged(backend, name):
    p = np.random.default_rng(3).standard_normal(50)
    before = p.copy()
    kw = {"SGD": dict(lr=0.1, momentum=0.9)}.get(name, {})
    opt = getattr(optim, name)([p], **kw)
    for _ in range(3):
        opt.step([np.zeros(50)])
    np.testing.assert_array_equal(p, before)


def test_bad_grads_are_refused_before_anything_is_written(backend):
    ps = [np.ones(3, np.float32), np.ones(2, np.float32)]
    opt = optim.Adam(ps)
    for grads, err, match in [
        ([np.ones(3, np.float32), np.ones(2, np.int64)], TypeError, r"grads\[1\].*float32 or float64"),
        ([np.ones(3, np.float32), np.ones(3, np.float32)], ValueError, r"grads\[1\].*shape \(2,\)"),
        ([np.ones(3, np.float32), np.ones(2, np.float64)], TypeError, r"grads\[1\].*dtype float32"),
        ([np.ones(3, np.float32)], ValueError, "expected 2 grads"),
    ]:
        with pytest.raises(err, match=match):
            opt.step(grads)
        np.testing.assert_array_equal(ps[0], 1.0)
        assert opt.state_dict()["state"] == {}


def test_bad_params_and_hyper_parameters_are_refused():
    with pytest.raises(TypeError, match="numpy arrays"):
        optim.SGD([[1.0, 2.0]], lr=0.1)
    with pytest.raises(TypeError, match="float32 or float64"):
        optim.SGD([np.ones(3, np.int32)], lr=0.1)
    with pytest.raises(ValueError, match="C-contiguous"):
        optim.SGD([np.ones((3, 4))[:, ::2]], lr=0.1)
    with pytest.raises(ValueError, match="more than one parameter group"):
        p = np.ones(3)
        optim.SGD([{"params": [p]}, {"params": [p]}], lr=0.1)
    with pytest.raises(ValueError, match="learning rate"):
        optim.Adam([np.ones(3)], lr=-1.0)
    with pytest.raises(ValueError, match="beta parameter at index 1"):
        optim.Adam([np.ones(3)], betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="Nesterov"):
        optim.SGD([np.ones(3)], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.Adam([])
    with pytest.raises(TypeError, match="unexpected keyword"):
        optim.Adam([np.ones(3)], momentum=0.9)


def test_empty_params_and_nan_gradients(backend):
    p = np.ones(0, np.float32)
    q = np.ones(4, np.float32)
    opt = optim.Adam([p, q])
    opt.step([np.ones(0, np.float32), np.array([np.nan, 1, 1, 1], np.float32)])
    assert np.isnan(q[0]) and np.isfinite(q[1:]).all()
    t = torch.nn.Parameter(torch.ones(4))
    t.grad = torch.tensor([np.nan, 1, 1, 1])
    torch.optim.Adam([t]).step()
    np.testing.assert_array_equal(q, t.detach().numpy())


# ---------------------------------------------------------------- state_dict round trips


@pytest.mark.parametrize("case", [c for c in CASES if c[1]], ids=case_id)
def test_torch_state_dict_loads_and_continues_identically(backend, case):
    name, kw = case
    dtype = np.float64
    ours, ps, theirs, tps = run_both(name, kw, dtype, steps=5, seed=4)
    # a fresh fastnorm optimizer on torch's params takes over torch's state
    qs = [t.detach().numpy().copy() for t in tps]
    resumed = getattr(optim, name)(qs, **kw)
    resumed.load_state_dict(theirs.state_dict())
    rng = np.random.default_rng(5)
    for _ in range(5):
        gs = [rng.standard_normal(p.shape) for p in qs]
        for t, g in zip(tps, gs):
            t.grad = torch.from_numpy(g.copy())
        theirs.step()
        resumed.step(gs)
    for q, t in zip(qs, tps):
        assert_close_to_torch(q, t.detach(), dtype, name in EXACT)


@pytest.mark.parametrize("case", [c for c in CASES if c[1]], ids=case_id)
def test_our_state_dict_converts_into_torch_and_continues(backend, case):
    name, kw = case
    dtype = np.float32
    ours, ps, theirs, tps = run_both(name, kw, dtype, steps=5, seed=6)
    fresh = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in ps]
    torch_opt = getattr(torch.optim, name)(fresh, **kw)
    torch_opt.load_state_dict(optim.to_torch(ours.state_dict()))
    rng = np.random.default_rng(7)
    for _ in range(5):
        gs = [rng.standard_normal(p.shape).astype(dtype) for p in ps]
        for t, g in zip(fresh, gs):
            t.grad = torch.from_numpy(g.copy())
        torch_opt.step()
        ours.step(gs)
    for p, t in zip(ps, fresh):
        assert_close_to_torch(p, t.detach(), dtype, name in EXACT)


def test_load_state_dict_checks_before_changing_anything():
    p = np.ones(3)
    opt = optim.Adam([p])
    opt.step([np.ones(3)])
    good = opt.state_dict()
    snapshot = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in good["state"][0].items()}
    bad = {"state": {0: {**good["state"][0], "exp_avg": np.zeros(4)}},
           "param_groups": good["param_groups"]}
    with pytest.raises(ValueError, match="shape"):
        opt.load_state_dict(bad)
    with pytest.raises(ValueError, match="number of parameter groups"):
        opt.load_state_dict({"state": {}, "param_groups": []})
    with pytest.raises(ValueError, match="doesn't match the size"):
        opt.load_state_dict({"state": {}, "param_groups": [{**good["param_groups"][0], "params": [0, 1]}]})
    after = opt.state_dict()["state"][0]
    for k, v in snapshot.items():
        np.testing.assert_array_equal(after[k], v)


def test_loaded_state_is_copied_and_cast_to_the_params_dtype():
    p = np.ones(3, np.float32)
    opt = optim.Adam([p])
    exp_avg = np.full(3, 0.5)
    opt.load_state_dict({"state": {0: {"step": 3, "exp_avg": exp_avg, "exp_avg_sq": np.ones(3)}},
                         "param_groups": [{"lr": 0.5, "params": [0]}]})
    st = opt.state_dict()["state"][0]
    assert st["exp_avg"].dtype == np.float32 and float(st["step"]) == 3.0
    assert opt.param_groups[0]["lr"] == 0.5 and opt.param_groups[0]["betas"] == (0.9, 0.999)
    opt.step([np.ones(3, np.float32)])
    np.testing.assert_array_equal(exp_avg, 0.5)  # the caller's array is not the state


# ---------------------------------------------------------------- functional kernels


def _inputs(dtype, n=37, seed=8):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(n).astype(dtype) for _ in range(2)] + \
        [np.abs(rng.standard_normal(n)).astype(dtype) for _ in range(4)]


FUNCTIONAL = {
    "sgd_": (lambda a, k: F.sgd_(a[0], a[1], a[2], lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1, **k),
             lambda a: ref.sgd(a[0], a[1], a[2], lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1),
             (0, 2)),
    "adagrad_": (lambda a, k: F.adagrad_(a[0], a[1], a[2], 3, lr=0.1, lr_decay=0.1, weight_decay=0.1, **k),
                 lambda a: ref.adagrad(a[0], a[1], a[2], 3, lr=0.1, lr_decay=0.1, weight_decay=0.1),
                 (0, 2)),
    "adadelta_": (lambda a, k: F.adadelta_(a[0], a[1], a[2], a[3], lr=0.5, weight_decay=0.1, **k),
                  lambda a: ref.adadelta(a[0], a[1], a[2], a[3], lr=0.5, weight_decay=0.1),
                  (0, 2, 3)),
    "rmsprop_": (lambda a, k: F.rmsprop_(a[0], a[1], a[2], centered=True, momentum=0.5, grad_avg=a[3] * 0,
                                         momentum_buffer=a[4], **k),
                 None, (0, 2)),
    "adam_": (lambda a, k: F.adam_(a[0], a[1], a[2], a[3], 4, lr=0.01, beta1=0.9, beta2=0.99, eps=1e-8,
                                   weight_decay=0.1, max_exp_avg_sq=a[4], **k),
              lambda a: ref.adam(a[0], a[1], a[2], a[3], 4, lr=0.01, beta1=0.9, beta2=0.99, eps=1e-8,
                                 weight_decay=0.1, max_exp_avg_sq=a[4]),
              (0, 2, 3, 4)),
}


@pytest.mark.parametrize("name", list(FUNCTIONAL))
def test_functional_matches_the_float64_reference(backend, dtype, name):
    run, reference, touched = FUNCTIONAL[name]
    args = _inputs(dtype)
    if reference is None:  # rmsprop: check against the reference with the same grad_avg
        sq, ga, buf = args[2].copy(), np.zeros_like(args[0]), args[4].copy()
        expect = ref.rmsprop(args[0], args[1], sq, centered=True, momentum=0.5, grad_avg=ga, momentum_buffer=buf)
        expect = (expect[0], expect[1])
    else:
        expect = reference([a.copy() for a in args])
    out = run(args, {})
    assert out is args[0]
    rtol = 1e-12 if dtype == np.float64 else 2e-6
    for j, e in zip(touched, expect):
        np.testing.assert_allclose(args[j], e, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("name", ["sgd_", "adam_", "adadelta_"])
def test_functional_any_layout_gives_the_same_bits(backend, layout, name):
    layout_name, make = layout
    run, _, touched = FUNCTIONAL[name]
    base = [a.reshape(37, 1) for a in _inputs(np.float64)]
    expect = [a.copy() for a in base]
    run(expect, {})
    args = [make(a) for a in base]
    run(args, {})
    for j in touched:
        np.testing.assert_array_equal(np.asarray(args[j]), expect[j])


def test_functional_bad_inputs(backend):
    p, g, m, v = (np.ones(4, np.float32) for _ in range(4))
    kw = dict(lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8)
    with pytest.raises(TypeError, match="grad must be a float32 or float64"):
        F.adam_(p, np.ones(4, np.int32), m, v, 1, **kw)
    with pytest.raises(ValueError, match=r"grad and param must have the same shape"):
        F.adam_(p, np.ones(5, np.float32), m, v, 1, **kw)
    with pytest.raises(TypeError, match="exp_avg must have param's dtype"):
        F.adam_(p, g, np.ones(4), v, 1, **kw)
    with pytest.raises(TypeError, match="param must be a numpy.ndarray"):
        F.adam_([1.0, 2.0], g, m, v, 1, **kw)
    with pytest.raises(ValueError, match="step must be >= 1"):
        F.adam_(p, g, m, v, 0, **kw)
    ro = np.ones(4, np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="exp_avg_sq is read-only"):
        F.adam_(p, g, m, ro, 1, **kw)
    with pytest.raises(ValueError, match="momentum_buffer is required"):
        F.sgd_(p, g, None, lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="grad_avg is required"):
        F.rmsprop_(p, g, m, centered=True)
    np.testing.assert_array_equal(p, 1.0)
    np.testing.assert_array_equal(m, 1.0)


def test_functional_empty_and_the_docstring_example(backend):
    e = np.ones(0)
    assert F.adam_(e, e.copy(), e.copy(), e.copy(), 1, lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8).shape == (0,)
    p = np.zeros(2)
    F.adam_(p, np.array([1.0, -2.0]), np.zeros(2), np.zeros(2), 1, lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8)
    np.testing.assert_allclose(p, [-0.1, 0.1], rtol=1e-7)


def test_functional_equals_the_optimizer_step(backend):
    rng = np.random.default_rng(9)
    p = rng.standard_normal(100).astype(np.float32)
    q = p.copy()
    m, v = np.zeros_like(p), np.zeros_like(p)
    opt = optim.AdamW([q], lr=0.01)
    for step in range(1, 6):
        g = rng.standard_normal(100).astype(np.float32)
        F.adam_(p, g, m, v, step, lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=1e-2, decoupled=True)
        opt.step([g])
    np.testing.assert_array_equal(p, q)


def test_functional_docstring_examples():
    import doctest

    result = doctest.testmod(F, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 5 and result.failed == 0


def test_chunk_table_covers_every_element_once():
    sizes = [0, 5, 2 * F.CHUNK + 1, F.CHUNK]
    table = F.chunk_table(sizes)
    assert table.dtype == np.int64 and table.shape == (1 + 3 + 1, 3)
    for t, n in enumerate(sizes):
        rows = table[table[:, 0] == t]
        covered = np.concatenate([np.arange(a, b) for _, a, b in rows]) if len(rows) else np.array([], int)
        np.testing.assert_array_equal(covered, np.arange(n))
        assert (rows[:, 2] - rows[:, 1] <= F.CHUNK).all()


def test_pointer_table_without_the_compiled_helper(monkeypatch):
    arrays = [np.ones(3), None, np.zeros(2), np.ones(1)]
    fast = F.pointer_table(arrays, 2)
    monkeypatch.setattr(F, "_cython_addresses", None)
    slow = F.pointer_table(arrays, 2)
    np.testing.assert_array_equal(fast, slow)
    assert slow[0, 1] == 0 and slow[0, 0] == arrays[0].ctypes.data


def test_optimizers_step_from_many_threads_at_once(backend):
    import threading

    n = 600_000  # numba's parallel path (launches serialized by _dispatch's lock)
    rng = np.random.default_rng(10)
    inits = [rng.standard_normal(n).astype(np.float32) for _ in range(4)]
    grads = [rng.standard_normal(n).astype(np.float32) for _ in range(4)]

    def run(k, out):
        p = inits[k].copy()
        opt = optim.Adam([p], lr=0.01)
        for _ in range(3):
            opt.step([grads[k]])
        out[k] = p

    serial, threaded = {}, {}
    for k in range(4):
        run(k, serial)
    threads = [threading.Thread(target=run, args=(k, threaded)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(4):
        np.testing.assert_array_equal(threaded[k], serial[k])
