"""l1/l2 penalties and their gradients, the L1 proximal step, clip_grad_norm_: against torch and
float64 NumPy, bitwise across backends and threads, bad inputs."""
import math

import numpy as np
import pytest

import fastnorm
import fastnorm.functional as fn
from fastnorm import _dispatch

torch = pytest.importorskip("torch")


def grads_list(dtype, seed=0, shapes=((3, 4), (17,), (2, 3, 5), (0, 4), (1000,))):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


def test_penalties_against_numpy_and_torch(backend, dtype):
    arrays = grads_list(dtype)
    l1 = fn.l1_penalty(arrays)
    l2 = fn.l2_penalty(arrays)
    assert isinstance(l1, float) and isinstance(l2, float)
    ref1 = sum(np.abs(a.astype(np.float64)).sum() for a in arrays)
    ref2 = sum((a.astype(np.float64) ** 2).sum() for a in arrays)
    assert l1 == pytest.approx(ref1, rel=1e-13) and l2 == pytest.approx(ref2, rel=1e-13)
    ts = [torch.from_numpy(a).double() for a in arrays]
    assert l1 == pytest.approx(float(sum(t.abs().sum() for t in ts)), rel=1e-12)
    assert l2 == pytest.approx(float(sum(t.pow(2).sum() for t in ts)), rel=1e-12)
    assert fn.l1_penalty({"a": arrays[0], "b": arrays[1]}) == pytest.approx(
        fn.l1_penalty(arrays[:2]), rel=1e-15)
    assert fn.l2_penalty(arrays[2]) == pytest.approx(float((arrays[2].astype(np.float64) ** 2).sum()), rel=1e-13)
    assert fn.l1_penalty([]) == 0.0


def test_penalty_gradients_match_autograd(dtype):
    params = grads_list(dtype, 1, shapes=((5, 6), (7,)))
    params[0][0, :3] = 0.0
    grads = [np.ones_like(p) for p in params]
    fn.l1_penalty_grad_(params, grads, 0.3)
    ts = [torch.from_numpy(p.copy()).requires_grad_() for p in params]
    (0.3 * sum(t.abs().sum() for t in ts)).backward()
    for g, t in zip(grads, ts):
        np.testing.assert_allclose(g, 1 + t.grad.numpy(), rtol=1e-6)
    grads = [np.zeros_like(p) for p in params]
    fn.l2_penalty_grad_(params, grads, 0.05)
    ts = [torch.from_numpy(p.copy()).requires_grad_() for p in params]
    (0.05 * sum(t.pow(2).sum() for t in ts)).backward()
    for g, t in zip(grads, ts):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-6)
    # torch's weight_decay=wd step equals the gradient of wd/2 * l2_penalty
    w = params[1].copy()
    g = np.zeros_like(w)
    fn.l2_penalty_grad_([w], [g], 0.01 / 2)
    tw = torch.from_numpy(w.copy()).requires_grad_()
    tw.grad = torch.zeros_like(tw)
    torch.optim.SGD([tw], lr=1.0, weight_decay=0.01).step()
    np.testing.assert_allclose(w - g, tw.detach().numpy(), rtol=1e-6)


def test_l1_prox_is_softshrink(dtype):
    w = grads_list(dtype, 2, shapes=((40, 30),))[0]
    w[0, :4] = [np.nan, 0.0, -0.0, np.inf]
    expected = torch.nn.functional.softshrink(torch.from_numpy(w.copy()), 0.5).numpy()
    a = w.copy()
    assert fn.l1_prox_([a], 0.5)[0] is a
    np.testing.assert_array_equal(a, expected)
    b = w.copy().T  # any layout, in place
    fn.l1_prox_(b, 0.5)
    np.testing.assert_array_equal(b.T, expected)
    c = w.copy()
    fn.l1_prox_({"w": c}, 0.0)
    np.testing.assert_array_equal(c, w)
    with pytest.raises(ValueError, match="threshold"):
        fn.l1_prox_([w.copy()], -1.0)


@pytest.mark.parametrize("norm_type", [1, 2, 2.0, math.inf, "inf", 3.0, 0.5])
@pytest.mark.parametrize("max_norm", [0.5, 1e6])
def test_clip_grad_norm_matches_torch(backend, dtype, norm_type, max_norm):
    # (torch refuses the inf norm of an empty gradient; ours is 0: see test_clip_grad_norm_edge_cases)
    grads = grads_list(dtype, 3, shapes=((3, 4), (17,), (2, 3, 5), (1000,)))
    ts = [torch.from_numpy(g.copy()) for g in grads]
    params = [torch.zeros_like(t, requires_grad=True) for t in ts]
    for p, t in zip(params, ts):
        p.grad = t
    total_t = torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type=norm_type)
    total = fn.clip_grad_norm_(grads, max_norm, norm_type=norm_type)
    assert isinstance(total, float)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    assert total == pytest.approx(float(total_t), rel=rtol)
    for g, p in zip(grads, params):
        np.testing.assert_allclose(g, p.grad.numpy(), rtol=rtol, atol=1e-7)
    new_total = fn.grad_norm(grads, norm_type)
    assert new_total <= max_norm * (1 + 1e-5) + 1e-6


def test_clip_grad_norm_non_finite_as_torch(dtype):
    for bad in (np.nan, np.inf):
        grads = grads_list(dtype, 4, shapes=((5,), (6,)))
        grads[1][2] = bad
        ts = [torch.from_numpy(g.copy()) for g in grads]
        params = [torch.zeros_like(t, requires_grad=True) for t in ts]
        for p, t in zip(params, ts):
            p.grad = t
        total_t = float(torch.nn.utils.clip_grad_norm_(params, 1.0))
        total = fn.clip_grad_norm_(grads, 1.0)
        assert (math.isnan(total) and math.isnan(total_t)) or total == total_t
        for g, p in zip(grads, params):
            np.testing.assert_array_equal(np.isnan(g), np.isnan(p.grad.numpy()))
            np.testing.assert_array_equal(g[~np.isnan(g)], p.grad.numpy()[~np.isnan(g)])
        grads = grads_list(dtype, 4, shapes=((5,), (6,)))
        grads[0][0] = bad
        before = [g.copy() for g in grads]
        params = [torch.zeros_like(torch.from_numpy(g), requires_grad=True) for g in grads]
        for p, g in zip(params, grads):
            p.grad = torch.from_numpy(g.copy())
        with pytest.raises(RuntimeError, match="non-finite"):
            torch.nn.utils.clip_grad_norm_(params, 1.0, error_if_nonfinite=True)
        with pytest.raises(RuntimeError, match="non-finite"):
            fn.clip_grad_norm_(grads, 1.0, error_if_nonfinite=True)
        for g, b in zip(grads, before):
            np.testing.assert_array_equal(g, b)  # nothing scaled


def test_clip_grad_norm_edge_cases():
    assert fn.clip_grad_norm_([], 1.0) == 0.0
    assert fn.grad_norm([np.empty(0)], math.inf) == 0.0 and fn.grad_norm([np.empty((2, 0))]) == 0.0
    g = np.array([3.0, 4.0])
    assert fn.clip_grad_norm_(g, 10.0) == 5.0  # a single array
    np.testing.assert_array_equal(g, [3.0, 4.0])
    gf = np.asfortranarray(np.arange(12.0).reshape(3, 4))
    gc = np.ascontiguousarray(gf)
    assert fn.clip_grad_norm_([gf], 1.0) == fn.clip_grad_norm_([gc], 1.0)
    np.testing.assert_array_equal(gf, gc)


def test_norms_identical_across_backends_and_threads(dtype):
    big = np.random.default_rng(5).standard_normal((1 << 19) + 333).astype(dtype)
    arrays = [big, big[:1000]]
    results = []
    for b in _dispatch.BACKENDS:
        fastnorm.set_backend(b)
        for t in (1, 2, 3):
            fastnorm.set_num_threads(t)
            results.append((fn.l1_penalty(arrays), fn.l2_penalty(arrays), fn.grad_norm(arrays, 3.0),
                            fn.grad_norm(arrays, math.inf)))
    assert all(r == results[0] for r in results)
    assert results[0][3] == float(np.abs(big).max())


def test_bad_inputs():
    g = [np.ones(3)]
    with pytest.raises(TypeError, match=r"arrays\[0\] must be a float32 or float64"):
        fn.l1_penalty([np.ones(3, np.int64)])
    with pytest.raises(TypeError, match=r"grads\[0\] must be a numpy.ndarray"):
        fn.clip_grad_norm_([[1.0, 2.0]], 1.0)
    with pytest.raises(TypeError, match=r"grads\[0\] must be a float32 or float64"):
        fn.clip_grad_norm_([np.ones(3, np.int32)], 1.0)
    with pytest.raises(ValueError, match="norm_type"):
        fn.clip_grad_norm_(g, 1.0, norm_type=0)
    with pytest.raises(ValueError, match="norm_type"):
        fn.clip_grad_norm_(g, 1.0, norm_type=-2.0)
    with pytest.raises(TypeError, match="norm_type"):
        fn.clip_grad_norm_(g, 1.0, norm_type="two")
    ro = np.ones(3)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        fn.clip_grad_norm_([ro], 1.0)
    with pytest.raises(ValueError, match="same shape"):
        fn.l2_penalty_grad_([np.ones(3)], [np.ones(4)])
    with pytest.raises(ValueError, match="same length"):
        fn.l2_penalty_grad_([np.ones(3)], [np.ones(3), np.ones(3)])
    with pytest.raises(ValueError, match="finite"):
        fn.l1_penalty_grad_([np.ones(3)], [np.ones(3)], float("nan"))
