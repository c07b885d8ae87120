"""kernels/numba/lanes.py: the 32-lane float64 sums emitted as LLVM vector code.

Each intrinsic must give exactly the fixed-order sum of the determinism contract (lane j sums
elements 32k + j in order; lanes combined (l[j]+l[8+j])+(l[16+j]+l[24+j]), then a tree) over
the first n - n % 32 elements, here checked bit for bit against that order written in NumPy.
"""
import numpy as np
import pytest

pytest.importorskip("numba")
from numba import njit  # noqa: E402

from fastnorm.kernels.numba import lanes as L  # noqa: E402

LENGTHS = (0, 1, 31, 32, 33, 64, 100, 1024, 4099)


def lane_order(terms):
    """The contract's sum of float64 ``terms`` over their first n - n % 32 elements."""
    n32 = len(terms) - len(terms) % 32
    acc = np.zeros(32)
    for block in terms[:n32].reshape(-1, 32):
        acc = acc + block  # lane j += element 32k + j, k in order
    v = (acc[0:8] + acc[8:16]) + (acc[16:24] + acc[24:32])
    return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]))


@njit(cache=False)
def _all(x, dy, w, dx, mean, rstd):
    return (L.lane_sum(x), L.lane_sqdev(x, mean), L.lane_abs(x), L.lane_dot(dy, x),
            L.lane_grad(dy, x, mean, rstd), L.lane_grad_w(dy, w, x, mean, rstd),
            L.lane_grad_pf(dy, x, dx, dy, x, mean, rstd),
            L.lane_grad_w_pf(dy, w, x, dx, dy, x, mean, rstd), L.lane_shifted(x, mean))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", LENGTHS)
def test_lane_sums_follow_the_fixed_order(dtype, n):
    rng = np.random.default_rng(n)
    # an offset and a spread of magnitudes make every reordering show in the last bits
    x = (rng.standard_normal(n) * 10.0 ** rng.integers(-3, 4, n) + 7.0).astype(dtype)
    dy = rng.standard_normal(n).astype(dtype)
    w = rng.standard_normal(n).astype(dtype)
    mean, rstd = 7.125, 0.3
    got = _all(x, dy, w, np.empty_like(x), mean, rstd)
    x64, dy64, w64 = (a.astype(np.float64) for a in (x, dy, w))
    g = dy64 * w64
    want = (lane_order(x64), lane_order((x64 - mean) ** 2), lane_order(np.abs(x64)),
            lane_order(dy64 * x64),
            (lane_order(dy64), lane_order(dy64 * ((x64 - mean) * rstd))),
            (lane_order(g), lane_order(g * ((x64 - mean) * rstd))))
    want = want + want[4:6]  # the prefetching variants give the same sums
    want = want + ((lane_order(x64 - mean), lane_order((x64 - mean) ** 2)),)
    for name, a, b in zip(["sum", "sqdev", "abs", "dot", "grad", "grad_w", "grad_pf", "grad_w_pf",
                           "shifted"],
                          got, want):
        assert np.array_equal(np.asarray(a), np.asarray(b)), f"lane_{name}, n={n}: {a!r} != {b!r}"


def test_nonfinite_values_propagate():
    x = np.ones(64, np.float32)
    x[40] = np.nan
    assert np.isnan(_all(x, x, x, np.empty_like(x), 0.0, 1.0)[0])
    x[40] = np.inf
    assert _all(x, x, x, np.empty_like(x), 0.0, 1.0)[0] == np.inf


def test_rejects_strided_rows():
    """A non-contiguous row would be read as if contiguous: the typer refuses it."""
    x = np.ones(64, np.float32)[::2]
    with pytest.raises(Exception, match="(?i)lane_sum|typing|resolution"):
        njit(lambda a: L.lane_sum(a))(x)


@njit(cache=False)
def _max(x):
    return L.lane_max(x)


def max_order(x):
    """The contract's maximum (divmath.h dm_row_max) of the first n - n % 32 elements: lane j
    keeps v if v > acc, from -inf, over elements 32k + j; then lanes 0..31 in order."""
    n32 = len(x) - len(x) % 32
    acc = [-np.inf] * 32
    for k in range(0, n32, 32):
        for j in range(32):
            v = float(x[k + j])
            acc[j] = v if v > acc[j] else acc[j]
    mx = -np.inf
    for a in acc:
        mx = a if a > mx else mx
    return mx


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", LENGTHS)
def test_lane_max_follows_the_fixed_order(dtype, n):
    rng = np.random.default_rng(n + 1)
    x = rng.standard_normal(n).astype(dtype)
    got = _max(x)
    assert got == max_order(x) or (np.isnan(got) and np.isnan(max_order(x)))
    # signed zeros keep the first seen per lane, NaN never wins, -inf rows stay -inf
    for fill in (0.0, -0.0):
        z = np.full(n, fill, dtype)
        z[1::3] = -fill
        if n > 5:
            z[5] = np.nan
        got, want = _max(z), max_order(z)
        assert got == want and np.signbit(got) == np.signbit(want), (fill, got, want)
    assert _max(np.full(n, -np.inf, dtype)) == -np.inf


def test_vector_exp32_is_the_scalar_fexp32():
    """divergence.exps32 (explicit 16-wide vector code) gives fexp32's bits, special values
    included, and the float32 softmax rows use it for all but the last n % 16 elements."""
    from fastnorm.kernels.numba import divergence as D

    @njit(cache=False)
    def scalar(x, m32, e):
        for i in range(x.shape[0]):
            e[i] = np.float64(D.fexp32(np.float32(x[i] - m32)))

    @njit(cache=False)
    def vector(x, m32, e):
        D._exps(x, np.float64(m32), e)

    rng = np.random.default_rng(7)
    special = [np.nan, -np.inf, np.inf, -86.0, -85.99, -87.0, 0.0, -0.0, 88.0, -1e-30, 1e-45]
    for n in (0, 5, 16, 17, 1000, 1003):
        x = np.concatenate([rng.standard_normal(n) * 30, special]).astype(np.float32)
        for m in (0.0, 3.5, -100.0):
            a, b = np.empty(len(x)), np.empty(len(x))
            scalar(x, np.float32(m), a)
            vector(x, np.float32(m), b)
            assert np.array_equal(a, b, equal_nan=True), (n, m)


@njit(cache=False)
def _scaled(x, w, b, y, mean, rstd, mode):
    L.row_scale(x, w, b, y, mean, rstd, mode >= 1, mode == 2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", (0, 7, 8, 9, 100, 1024, 1031))
def test_row_scale_is_the_scalar_output_pass(dtype, n):
    """row_scale: y = t [* w] [+ b], t = (x - mean) * rstd in float64 rounded to the dtype,
    the product and the sum each rounded in the dtype: bit for bit over n - n % 8 elements,
    the tail untouched; in place (y is x) too."""
    rng = np.random.default_rng(n + 2)
    x = (rng.standard_normal(n) * 3.0 + 1.5).astype(dtype)
    w = rng.standard_normal(n).astype(dtype)
    b = rng.standard_normal(n).astype(dtype)
    if n > 3:
        x[3] = np.nan
    mean, rstd = 1.4999999, 0.3333333333
    t = ((x.astype(np.float64) - mean) * rstd).astype(dtype)
    n8 = n - n % 8
    for mode, want in enumerate((t, t * w, t * w + b)):  # float32 arrays: float32 arithmetic
        y = np.full(n, 42.0, dtype)
        _scaled(x, w, b, y, mean, rstd, mode)
        assert np.array_equal(y[:n8], want[:n8], equal_nan=True), mode
        assert (y[n8:] == 42.0).all()
        z = x.copy()
        _scaled(z, w, b, z, mean, rstd, mode)
        assert np.array_equal(z[:n8], want[:n8], equal_nan=True), mode


@njit(cache=False)
def _dx(dy, w, x, dx, pdw, pdb, mean, rstd, mg, mgx, has_w, want_dw, want_db):
    L.row_dx(dy, w, x, dx, pdw, pdb, mean, rstd, mg, mgx, has_w, want_dw, want_db)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", (0, 7, 8, 100, 1031))
@pytest.mark.parametrize("has_w,want_dw,want_db", [(True, True, True), (False, True, False),
                                                    (True, False, True), (False, False, False)])
def test_row_dx_is_the_scalar_dx_pass(dtype, n, has_w, want_dw, want_db):
    """row_dx: dx = ((g - mg) - xhat * mgx) * rstd in float64 rounded once, g = dy * w (or dy),
    pdw += dy * xhat, pdb += dy, bit for bit over n - n % 8 elements (the tail untouched);
    dx may be dy."""
    rng = np.random.default_rng(n + 3)
    dy, x, w = (rng.standard_normal(n).astype(dtype) for _ in range(3))
    mean, rstd, mg, mgx = 0.125, 1.7, -0.3, 0.45
    n8 = n - n % 8
    d, x64 = dy.astype(np.float64), x.astype(np.float64)
    xhat = (x64 - mean) * rstd
    g = d * w.astype(np.float64) if has_w else d
    want = (((g - mg) - xhat * mgx) * rstd).astype(dtype)
    p0w, p0b = rng.standard_normal(n), rng.standard_normal(n)
    for in_place in (False, True):
        dx = dy.copy() if in_place else np.full(n, 42.0, dtype)
        pdw = p0w.copy() if want_dw else np.empty(0)
        pdb = p0b.copy() if want_db else np.empty(0)
        _dx(dx if in_place else dy, w if has_w else np.empty(0, dtype), x, dx, pdw, pdb, mean, rstd,
            mg, mgx, has_w, want_dw, want_db)
        assert np.array_equal(dx[:n8], want[:n8])
        assert np.array_equal(dx[n8:], dy[n8:] if in_place else np.full(n - n8, 42.0, dtype))
        if want_dw:
            assert np.array_equal(pdw[:n8], p0w[:n8] + d[:n8] * xhat[:n8]) and np.array_equal(pdw[n8:], p0w[n8:])
        if want_db:
            assert np.array_equal(pdb[:n8], p0b[:n8] + d[:n8]) and np.array_equal(pdb[n8:], p0b[n8:])
