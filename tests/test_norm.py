"""layer_norm / rms_norm and their backwards: oracles, layouts, out=, validation, determinism."""
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastnorm
import fastnorm.functional as fn
from fastnorm import _dispatch

import reference as ref
from conftest import LAYOUTS, arrays, check_layout

OPS = ("layer_norm", "rms_norm")
# which parameters each op has: (weight, bias) for layer_norm, (weight,) for rms_norm
PARAM_NAMES = {"layer_norm": ("weight", "bias"), "rms_norm": ("weight",)}
# present/absent parameter combinations, incl. bias without weight
COMBOS = [("layer_norm", c) for c in ("wb", "w", "b", "")] + [("rms_norm", c) for c in ("w", "")]
AXES = (-1, -2, 1)
BIG = (1100, 257)     # 282700 elements > PARALLEL_MIN_WORK; 1100 rows > 256 row chunks; n % 8 != 0
assert BIG[0] * BIG[1] > _dispatch.PARALLEL_MIN_WORK
HUGE = (300, 2050)    # above numba's (higher) threshold too; n % 32 != 0
assert HUGE[0] * HUGE[1] > _dispatch.NUMBA_PARALLEL_MIN_WORK


def forward(op):
    return getattr(fn, op)


def backward(op):
    return getattr(fn, op + "_backward")


def make_params(op, combo, shape, dtype, rng):
    """The op's parameter tuple: random arrays for the letters in combo, None elsewhere."""
    return tuple(rng.standard_normal(shape).astype(dtype) if name[0] in combo else None
                 for name in PARAM_NAMES[op])


def tol(dtype):
    return 1e-5 if np.dtype(dtype) == np.float32 else 1e-12


def assert_close(actual, desired, dtype, rtol=None):
    """Within tol(dtype), relative to the largest finite magnitude of desired (NaNs must match)."""
    if desired is None:
        assert actual is None
        return
    assert actual.shape == desired.shape
    t = tol(dtype) if rtol is None else rtol
    finite = np.abs(desired[np.isfinite(desired)])
    scale = max(1.0, finite.max()) if finite.size else 1.0
    np.testing.assert_allclose(actual, desired, rtol=t, atol=t * scale, equal_nan=True)


def assert_bitwise(a, b):
    """Same shape, same native dtype, same bits (NaN payloads included); None matches None."""
    if a is None or b is None:
        assert a is None and b is None
        return
    assert a.dtype == b.dtype and a.dtype.isnative
    assert a.shape == b.shape
    ints = np.dtype(f"u{a.dtype.itemsize}")
    differ = np.ascontiguousarray(a).view(ints) != np.ascontiguousarray(b).view(ints)
    if differ.any():
        with np.errstate(invalid="ignore"):
            gap = np.nanmax(np.abs(a.astype(np.float64) - b)[differ]) if differ.sum() else 0
        raise AssertionError(f"{differ.sum()} of {a.size} elements differ in bits "
                             f"(first at {np.argwhere(differ)[0].tolist()}, max |diff| {gap:.3g})")


def assert_all_bitwise(xs, ys):
    xs = xs if isinstance(xs, tuple) else (xs,)
    ys = ys if isinstance(ys, tuple) else (ys,)
    assert len(xs) == len(ys)
    for a, b in zip(xs, ys):
        assert_bitwise(a, b)


def snapshot(*arrays):
    """Bytes of each array (logical values) and of the buffer under it, for unmodified checks."""
    out = []
    for a in arrays:
        if a is None:
            out.append(None)
            continue
        base = a
        while isinstance(base.base, np.ndarray):
            base = base.base
        out.append((a.tobytes(), base.tobytes()))
    return out


# ---------------------------------------------------------------- oracles


@pytest.mark.parametrize("axis", AXES)
@pytest.mark.parametrize("op,combo", COMBOS)
def test_forward_matches_reference_and_torch(backend, dtype, op, combo, axis):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 5, 12)).astype(dtype)
    params = make_params(op, combo, x.shape[axis % 3:], dtype, rng)
    y = forward(op)(x, *params, axis=axis)
    assert y.dtype == dtype and y.shape == x.shape
    assert_close(y, ref.REFERENCES[op](x, *params, axis=axis), dtype)
    assert_close(y, ref.TORCH[op](x, *params, axis=axis), dtype, rtol=1e-5 if dtype == np.float32 else 1e-10)


@pytest.mark.parametrize("axis", AXES)
@pytest.mark.parametrize("op,combo", COMBOS)
def test_backward_matches_reference_and_torch(backend, dtype, op, combo, axis):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 5, 12)).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    params = make_params(op, combo, x.shape[axis % 3:], dtype, rng)
    grads = backward(op)(dy, x, *params, axis=axis)
    assert len(grads) == 1 + len(params)
    for g, a in zip(grads, (x,) + params):
        if a is None:
            assert g is None
        else:
            assert g.dtype == dtype and g.shape == a.shape
    want = ref.REFERENCES[op + "_backward"](dy, x, *params, axis=axis)
    torch_want = ref.TORCH[op + "_backward"](dy, x, *params, axis=axis)
    for g, w, tw in zip(grads, want, torch_want):
        assert_close(g, w, dtype)
        assert_close(g, tw, dtype, rtol=1e-4 if dtype == np.float32 else 1e-10)


def test_reference_matches_torch_in_float64():
    """The two oracles agree with each other (so neither is trivially wrong)."""
    rng = np.random.default_rng(3)
    x, dy = rng.standard_normal((2, 3, 2, 10, 7))
    w, b = rng.standard_normal((2, 10, 7))
    for axis in (-2, 2):
        for name, args in (("layer_norm", (w, b)), ("rms_norm", (w,))):
            np.testing.assert_allclose(ref.REFERENCES[name](x, *args, axis=axis),
                                       ref.TORCH[name](x, *args, axis=axis), rtol=1e-12, atol=1e-12)
            for a, t in zip(ref.REFERENCES[name + "_backward"](dy, x, *args, axis=axis),
                            ref.TORCH[name + "_backward"](dy, x, *args, axis=axis)):
                np.testing.assert_allclose(a, t, rtol=1e-11, atol=1e-11)


def test_python_sequences_accepted(backend):
    y = fn.layer_norm([[1.0, 2.0, 3.0, 4.0]])
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, ref.layer_norm(np.array([[1.0, 2.0, 3.0, 4.0]])), rtol=1e-12)
    # by hand: invrms = 1/sqrt(12.5), xhat = x * invrms, dx = invrms * (1 - xhat * mean(xhat))
    dx, dw = fn.rms_norm_backward([[1.0, 1.0]], [[3.0, 4.0]], [1.0, 1.0], eps=0.0)
    r = 1 / np.sqrt(12.5)
    xhat = np.array([3.0, 4.0]) * r
    np.testing.assert_allclose(dx, [r * (1 - xhat * xhat.mean())], rtol=1e-12)
    np.testing.assert_allclose(dw, xhat, rtol=1e-12)


# ---------------------------------------------------------------- stats


@pytest.mark.parametrize("axis", AXES)
@pytest.mark.parametrize("op", OPS)
def test_return_stats_and_stats_roundtrip(backend, dtype, op, axis):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, 6, 16)).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    params = make_params(op, "wb", x.shape[axis % 3:], dtype, rng)
    res = forward(op)(x, *params, axis=axis, return_stats=True)
    y, stats = res[0], res[1:]
    assert_bitwise(y, forward(op)(x, *params, axis=axis))
    assert len(stats) == (2 if op == "layer_norm" else 1)
    for s in stats:
        assert s.shape == x.shape[:axis % 3] and s.dtype == np.float64
    want = (ref.layer_norm_stats(x, axis=axis) if op == "layer_norm" else (ref.rms_norm_stats(x, axis=axis),))
    for s, w in zip(stats, want):
        np.testing.assert_allclose(s, w, rtol=1e-12)
    plain = backward(op)(dy, x, *params, axis=axis)
    stats_arg = stats if op == "layer_norm" else stats[0]
    assert_all_bitwise(backward(op)(dy, x, *params, axis=axis, stats=stats_arg), plain)
    # the forward's keywords may be passed unchanged
    assert_all_bitwise(backward(op)(dy, x, *params, axis=axis, return_stats=True, stats=stats_arg), plain)


def test_stats_of_wrong_shape_raise(backend):
    x = np.ones((4, 8))
    with pytest.raises(ValueError):
        fn.layer_norm_backward(x, x, stats=(np.zeros(3), np.ones(3)))
    with pytest.raises(ValueError):
        fn.layer_norm_backward(x, x, stats=np.zeros(4))
    with pytest.raises(ValueError):
        fn.rms_norm_backward(x, x, stats=np.ones(5))


# ---------------------------------------------------------------- layouts and edge values


@pytest.mark.parametrize("op", OPS)
def test_every_layout_equals_c_contiguous(backend, dtype, layout, op):
    name, make = layout
    rng = np.random.default_rng(5)
    for axis, combo in ((-1, "wb"), (1, "")):
        xc = rng.standard_normal((3, 5, 24)).astype(dtype)
        dyc = rng.standard_normal(xc.shape).astype(dtype)
        pc = make_params(op, combo, xc.shape[axis:], dtype, rng)
        x, dy = make(xc), make(dyc)
        p = tuple(None if a is None else make(a) for a in pc)
        check_layout(name, xc, x)
        before = snapshot(x, dy, *p)
        assert_bitwise(forward(op)(x, *p, axis=axis), forward(op)(xc, *pc, axis=axis))
        assert_all_bitwise(backward(op)(dy, x, *p, axis=axis), backward(op)(dyc, xc, *pc, axis=axis))
        assert snapshot(x, dy, *p) == before


@pytest.mark.parametrize("op", OPS)
def test_edge_arrays_all_layouts(backend, dtype, op):
    """Every edge value in every layout: equals the C input's result bitwise, matches the
    reference (NaN where the reference has NaN), and leaves the inputs unmodified."""
    rng = np.random.default_rng(6)
    checked = set()
    for label, lname, x, xc in arrays(dtype):
        check_layout(lname, xc, x)
        n = xc.shape[-1]
        w = rng.standard_normal(n).astype(dtype)
        params = (w, rng.standard_normal(n).astype(dtype))[: len(PARAM_NAMES[op])]
        dyc = rng.standard_normal(xc.shape).astype(dtype)
        dy = LAYOUTS[lname](dyc)
        before = snapshot(x, dy, *params)
        with np.errstate(all="ignore"):
            y_c = forward(op)(xc, *params)
            g_c = backward(op)(dyc, xc, *params)
            y = forward(op)(x, *params)
            g = backward(op)(dy, x, *params)
        assert snapshot(x, dy, *params) == before, (label, lname)
        assert_bitwise(y, y_c)
        assert_all_bitwise(g, g_c)
        if lname == "C" and xc.size:
            with np.errstate(all="ignore"):
                assert_close(y, ref.REFERENCES[op](xc, *params), dtype)
                for a, b in zip(g, ref.REFERENCES[op + "_backward"](dyc, xc, *params)):
                    assert_close(a, b, dtype)
        checked.add((label, lname))
    assert len(checked) == 13 * len(LAYOUTS)


@pytest.mark.parametrize("op", OPS)
def test_nan_stays_in_its_row(backend, dtype, op):
    for shape in ((6, 40), BIG):
        rng = np.random.default_rng(7)
        x = rng.standard_normal(shape).astype(dtype)
        dy = rng.standard_normal(shape).astype(dtype)
        x[2, 7] = np.nan
        y = forward(op)(x)
        dx = backward(op)(dy, x)[0]
        for a in (y, dx):
            assert np.isnan(a[2]).all()
            others = np.delete(a, 2, axis=0)
            assert np.isfinite(others).all()
        clean = np.delete(x, 2, axis=0)
        assert_close(np.delete(y, 2, axis=0), ref.REFERENCES[op](clean), dtype)
        assert_close(np.delete(dx, 2, axis=0),
                     ref.REFERENCES[op + "_backward"](np.delete(dy, 2, axis=0), clean)[0], dtype)


def test_large_offset_accuracy(backend):
    """|mean| = 1e6 std in float32: within 1e-5 of a float64 reference on the same input.

    PyTorch's CPU layer_norm is off by ~1e-1 here (float32 statistics); asserting its error is
    > 1e-3 shows that this input discriminates a stable reduction from an unstable one.
    """
    rng = np.random.default_rng(8)
    for shape in ((64, 1024), BIG):
        x = (1e6 + rng.standard_normal(shape)).astype(np.float32)
        want = ref.layer_norm(x)
        assert np.abs(want).max() > 1.0  # the float32 input still has unit-scale spread
        y = fn.layer_norm(x)
        assert np.abs(y - want).max() < 1e-5
        y, mean, invstd = fn.layer_norm(x, return_stats=True)
        np.testing.assert_allclose(mean, x.astype(np.float64).mean(-1), rtol=1e-12)
        assert np.abs(ref.torch_layer_norm(x) - want).max() > 1e-3
        dy = rng.standard_normal(shape).astype(np.float32)
        dx = fn.layer_norm_backward(dy, x)[0]
        want_dx = ref.layer_norm_backward(dy, x)[0]
        assert np.abs(dx - want_dx).max() < 1e-5 * max(1.0, np.abs(want_dx).max())


# ---------------------------------------------------------------- out=


@pytest.mark.parametrize("op", OPS)
def test_forward_in_place(backend, dtype, op):
    rng = np.random.default_rng(9)
    for shape in ((5, 24), BIG):
        x = rng.standard_normal(shape).astype(dtype)
        w = rng.standard_normal(shape[-1]).astype(dtype)
        want = forward(op)(x, w)
        r = forward(op)(x, w, out=x)
        assert r is x
        assert_bitwise(x, want)
        # in place on a non-contiguous array
        xf = np.asfortranarray(rng.standard_normal(shape).astype(dtype))
        want = forward(op)(xf, w)
        assert forward(op)(xf, w, out=xf) is xf
        assert_bitwise(np.ascontiguousarray(xf), want)


@pytest.mark.parametrize("op", OPS)
def test_backward_in_place_out_x(backend, dtype, op):
    rng = np.random.default_rng(10)
    for shape in ((5, 24), BIG):
        x = rng.standard_normal(shape).astype(dtype)
        dy = rng.standard_normal(shape).astype(dtype)
        params = make_params(op, "wb", shape[-1:], dtype, rng)
        want = backward(op)(dy, x, *params)
        got = backward(op)(dy, x, *params, out=x)
        assert got[0] is x
        assert_all_bitwise(got, want)


@pytest.mark.parametrize("op", OPS)
def test_backward_in_place_out_dy(backend, dtype, op):
    """out=dy: dx lands in dy, and dweight/dbias must still be sums of the *original* dy."""
    rng = np.random.default_rng(11)
    for shape in ((5, 24), BIG):
        x = rng.standard_normal(shape).astype(dtype)
        dy = rng.standard_normal(shape).astype(dtype)
        params = make_params(op, "wb", shape[-1:], dtype, rng)
        want = backward(op)(dy, x, *params)
        got = backward(op)(dy, x, *params, out=dy)
        assert got[0] is dy
        assert_bitwise(dy, want[0])
        for name, g, w in zip(PARAM_NAMES[op], got[1:], want[1:]):
            assert np.array_equal(g, w), f"d{name} differs with out=dy ({shape})"


@pytest.mark.parametrize("op", OPS)
def test_in_place_in_every_layout(backend, dtype, layout, op):
    """out=x (forward) and out=dy (backward) for x/dy in each layout: same bits as a fresh out,
    and nothing written outside the view (the strided/offset layouts' NaN guards stay)."""
    name, make = layout
    rng = np.random.default_rng(17)
    xc = rng.standard_normal((4, 6, 24)).astype(dtype)
    dyc = rng.standard_normal(xc.shape).astype(dtype)
    params = make_params(op, "wb", xc.shape[-1:], dtype, rng)
    want_y = forward(op)(xc, *params)
    want_g = backward(op)(dyc, xc, *params)

    def guards(a):  # NaNs around the view in its root buffer (strided, far_in_buffer)
        while isinstance(a.base, np.ndarray):
            a = a.base
        return np.isnan(a).sum() if a.dtype == dtype else 0

    def native(a):  # the byteswapped layout's result, in native order for the bit comparison
        return np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("="))

    x = make(xc)
    before = guards(x)
    assert forward(op)(x, *params, out=x) is x
    assert_bitwise(native(x), want_y)
    assert guards(x) == before
    x, dy = make(xc), make(dyc)
    before = guards(dy)
    g = backward(op)(dy, x, *params, out=dy)
    assert g[0] is dy
    assert_all_bitwise((native(dy),) + g[1:], want_g)
    assert guards(dy) == before


@pytest.mark.parametrize("op", OPS)
def test_out_overlapping_weight(backend, op):
    """out sharing memory with weight: the result must be as if weight were read first."""
    rng = np.random.default_rng(12)
    x = rng.standard_normal((4, 8))
    buf = np.zeros((4, 8))
    w = buf[0]
    w[...] = rng.standard_normal(8)
    want = forward(op)(x, w.copy())
    assert_bitwise(forward(op)(x, w, out=buf), want)


@pytest.mark.parametrize("op", OPS)
def test_non_contiguous_out(backend, dtype, op):
    rng = np.random.default_rng(13)
    x = rng.standard_normal((6, 20)).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    want = forward(op)(x)
    want_dx = backward(op)(dy, x)[0]
    for make in (LAYOUTS["strided"], LAYOUTS["F"], LAYOUTS["negative_strides"]):
        out = make(np.zeros_like(x))
        base = out.base if out.base is not None else out
        outside = np.isnan(base).sum()  # the strided view's NaN guards
        assert forward(op)(x, out=out) is out
        assert_bitwise(np.ascontiguousarray(out), want)
        assert np.isnan(base).sum() == outside
        assert backward(op)(dy, x, out=out)[0] is out
        assert_bitwise(np.ascontiguousarray(out), want_dx)
        assert np.isnan(base).sum() == outside


def _bad_outs(shape, dtype):
    other = np.float64 if dtype == np.float32 else np.float32
    ro = np.full(shape, 7.0, dtype)
    ro.flags.writeable = False
    return [
        ("shape", ValueError, np.full((shape[0], shape[1] + 1), 7.0, dtype)),
        ("transposed shape", ValueError, np.full(shape[::-1], 7.0, dtype)),
        ("dtype", TypeError, np.full(shape, 7.0, other)),
        ("int dtype", TypeError, np.full(shape, 7, np.int64)),
        ("list", TypeError, np.full(shape, 7.0, dtype).tolist()),
        ("read-only", ValueError, ro),
    ]


@pytest.mark.parametrize("op", OPS)
def test_bad_out_raises_before_writing(backend, dtype, op):
    rng = np.random.default_rng(14)
    for shape in ((4, 16), BIG):
        x = rng.standard_normal(shape).astype(dtype)
        for what, exc, out in _bad_outs(shape, dtype):
            before = np.array(out, copy=True)
            with pytest.raises(exc):
                forward(op)(x, out=out)
            with pytest.raises(exc):
                backward(op)(x, x, out=out)
            np.testing.assert_array_equal(np.asarray(out), before, err_msg=what)


@pytest.mark.parametrize("op", OPS)
def test_valid_out_untouched_when_another_argument_is_bad(backend, dtype, op):
    rng = np.random.default_rng(15)
    x = rng.standard_normal((4, 16)).astype(dtype)
    out = np.full_like(x, 7.0)
    with pytest.raises(ValueError):
        forward(op)(x, np.ones(15, dtype), out=out)
    with pytest.raises(ValueError):
        forward(op)(x, eps=-1.0, out=out)
    with pytest.raises(TypeError):
        backward(op)(x.astype(np.int32), x, out=out)
    with pytest.raises(ValueError):
        backward(op)(x[:3], x, out=out)
    dy = x.copy()
    stats = np.zeros(3) if op == "rms_norm" else (np.zeros(3), np.ones(3))
    with pytest.raises(ValueError):
        backward(op)(dy, x, stats=stats, out=dy)
    assert_bitwise(dy, x)
    assert (out == 7.0).all()


# ---------------------------------------------------------------- validation


BAD_DTYPES = [np.int32, np.int64, np.bool_, np.complex64, np.complex128, np.float16, object]


@pytest.mark.parametrize("bad", BAD_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("op", OPS)
def test_bad_dtypes_raise_type_error_naming_argument(backend, op, bad):
    x = np.arange(12, dtype=np.float64).reshape(3, 4) / 7
    w = np.ones(4)
    b = np.zeros(4)
    xb = x.astype(bad)
    with pytest.raises(TypeError, match=r"^x\b.*float32.*float64"):
        forward(op)(xb)
    with pytest.raises(TypeError, match=r"^x\b"):
        backward(op)(x, xb)
    with pytest.raises(TypeError, match=r"^dy\b"):
        backward(op)(xb, x)
    with pytest.raises(TypeError, match=r"^weight\b"):
        forward(op)(x, w.astype(bad))
    with pytest.raises(TypeError, match=r"^weight\b"):
        backward(op)(x, x, w.astype(bad))
    if op == "layer_norm":
        with pytest.raises(TypeError, match=r"^bias\b"):
            fn.layer_norm(x, w, b.astype(bad))
        with pytest.raises(TypeError, match=r"^bias\b"):
            fn.layer_norm_backward(x, x, w, b.astype(bad))


def test_dy_of_other_float_dtype_raises(backend):
    x = np.ones((2, 4), np.float32)
    with pytest.raises(TypeError, match="dy"):
        fn.layer_norm_backward(x.astype(np.float64), x)


@pytest.mark.parametrize("op", OPS)
def test_shape_mismatches_name_both_shapes(backend, op):
    x = np.ones((3, 4, 5))
    for axis, w in ((-1, np.ones(4)), (-1, np.ones((4, 5))), (1, np.ones(5)), (1, np.ones((5, 4)))):
        want = x.shape[axis % 3:]
        for call in (lambda: forward(op)(x, w, axis=axis), lambda: backward(op)(x, x, w, axis=axis)):
            with pytest.raises(ValueError) as e:
                call()
            msg = str(e.value)
            assert "weight" in msg and str(want) in msg and str(w.shape) in msg
    if op == "layer_norm":
        with pytest.raises(ValueError, match=re.escape(str((3,))) + ".*" + re.escape(str((5,)))
                           + "|" + re.escape(str((5,))) + ".*" + re.escape(str((3,)))):
            fn.layer_norm(x, None, np.ones(3))
    with pytest.raises(ValueError) as e:
        backward(op)(np.ones((3, 4, 6)), x)
    assert str((3, 4, 6)) in str(e.value) and str((3, 4, 5)) in str(e.value)


@pytest.mark.parametrize("op", OPS)
def test_zero_d_and_axis_errors(backend, op):
    with pytest.raises(ValueError):
        forward(op)(np.float64(1.0))
    with pytest.raises(ValueError):
        forward(op)(np.array(1.0, np.float32))
    with pytest.raises(ValueError):
        backward(op)(np.array(1.0), np.array(1.0))
    x = np.ones((2, 3))
    for axis in (2, -3, 100):
        with pytest.raises(ValueError, match="axis"):
            forward(op)(x, axis=axis)
        with pytest.raises(ValueError, match="axis"):
            backward(op)(x, x, axis=axis)
    for axis in (1.0, "1", True):
        with pytest.raises(TypeError, match="axis"):
            forward(op)(x, axis=axis)
    # axis=0 normalizes over everything: one row; stats are 0-d
    y, *stats = forward(op)(x + np.arange(6).reshape(2, 3), axis=0, return_stats=True)
    assert all(s.shape == () for s in stats)
    assert_close(y, ref.REFERENCES[op](x + np.arange(6).reshape(2, 3), axis=0), np.float64)


@pytest.mark.parametrize("op", OPS)
def test_empty_inputs(backend, dtype, op):
    # zero rows
    x = np.empty((0, 8), dtype)
    params = make_params(op, "wb", (8,), dtype, np.random.default_rng(0))
    y, *stats = forward(op)(x, *params, return_stats=True)
    assert y.shape == (0, 8) and y.dtype == dtype and all(s.shape == (0,) for s in stats)
    grads = backward(op)(x, x, *params)
    assert grads[0].shape == (0, 8) and grads[0].dtype == dtype
    for g in grads[1:]:  # sums over no rows
        assert g.shape == (8,) and g.dtype == dtype and (g == 0).all()
    out = np.empty((0, 8), dtype)
    assert forward(op)(x, *params, out=out) is out
    # zero-size normalized dimensions
    for shape, axis in (((4, 0), -1), ((3, 0, 5), 1), ((3, 5, 0), 1)):
        x = np.empty(shape, dtype)
        params = make_params(op, "wb", shape[axis % len(shape):], dtype, np.random.default_rng(0))
        y, *stats = forward(op)(x, *params, axis=axis, return_stats=True)
        assert y.shape == shape and all(s.shape == shape[:axis % len(shape)] for s in stats)
        grads = backward(op)(x, x, *params, axis=axis)
        assert grads[0].shape == shape
        for g, p in zip(grads[1:], params):
            assert g.shape == p.shape


# ---------------------------------------------------------------- determinism


def _run_all(op, x, dy, params):
    res = forward(op)(x, *params, return_stats=True)
    return res + backward(op)(dy, x, *params)


@pytest.mark.parametrize("shape", [(7, 19), (40, 2048), BIG, HUGE],
                         ids=["serial", "parallel_few_rows", "parallel", "parallel_numba"])
@pytest.mark.parametrize("op,combo", [("layer_norm", "wb"), ("layer_norm", "b"), ("rms_norm", "w")])
def test_bitwise_same_for_threads_and_backends(dtype, op, combo, shape):
    rng = np.random.default_rng(16)
    x = (3.0 + rng.standard_normal(shape)).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    params = make_params(op, combo, shape[-1:], dtype, rng)
    previous = fastnorm.get_backend()
    results = {}
    try:
        for be in _dispatch.BACKENDS:
            fastnorm.set_backend(be)
            for threads in (1, 2, 3):
                fastnorm.set_num_threads(threads)
                results[be, threads] = _run_all(op, x, dy, params)
    finally:
        fastnorm.set_backend(previous)
    first = results["cython", 1]
    for key, r in results.items():
        try:
            assert_all_bitwise(r, first)
        except AssertionError as e:
            raise AssertionError(f"{key} differs from ('cython', 1)") from e


# ---------------------------------------------------------------- properties


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    m=st.integers(1, 12),
    n=st.integers(2, 300),
    loc=st.floats(-1e4, 1e4),
    scale=st.floats(1e-2, 1e3),
    seed=st.integers(0, 2**32 - 1),
    eps=st.sampled_from([0.0, 1e-5]),
    f32=st.booleans(),
)
def test_normalized_rows_have_mean_zero_and_unit_variance(backend, m, n, loc, scale, seed, eps, f32):
    dt = np.float32 if f32 else np.float64
    x = (loc + scale * np.random.default_rng(seed).standard_normal((m, n))).astype(dt)
    x64 = x.astype(np.float64)
    v = x64.var(axis=-1)
    if (v == 0).any():  # float32 rounding at a large loc can make a row constant
        return
    y = fn.layer_norm(x, eps=eps).astype(np.float64)
    # float64 rounding of x - mean is amplified by |mean| / std (the input's conditioning);
    # float32 output is dominated by its own rounding
    cond = 1.0 + np.abs(x64.mean(axis=-1)) / np.sqrt(v)
    t = 1e-5 if f32 else 1e-13 * cond
    assert (np.abs(y.mean(axis=-1)) <= t).all(), y.mean(axis=-1)
    assert (np.abs(y.var(axis=-1) / (v / (v + eps)) - 1.0) <= t).all(), y.var(axis=-1)
    ms = (x64 * x64).mean(axis=-1)
    r = fn.rms_norm(x, eps=eps).astype(np.float64)
    np.testing.assert_allclose((r * r).mean(axis=-1), ms / (ms + eps), rtol=1e-5 if f32 else 1e-12)
