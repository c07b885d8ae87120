"""The column pieces of BatchNorm on small ``inner`` (channels-last) are summed 32 columns at a
time in vector registers (lanes.h cols_moments/cols_grad, numba lanes.col_moments32/col_grad32);
each column must still be its plain row-by-row float64 sum, bit for bit, on both backends, for
column counts that are and are not multiples of 32."""
import numpy as np
import pytest

import fastnorm
from fastnorm._dispatch import kernels
from fastnorm.ops import batch as B


def _reference(x2, d2, rb, mucol, rscol):
    """Per block of rb rows: the column means, m2, sum dy, sum dy * xhat, summed row by row."""
    out = []
    for r0 in range(0, x2.shape[0], rb):
        blk, db = x2[r0:r0 + rb], d2[r0:r0 + rb]
        s = np.zeros(x2.shape[1])
        for r in blk:
            s += r
        s = s / len(blk)
        q = np.zeros_like(s)
        a = np.zeros_like(s)
        e = np.zeros_like(s)
        for r, g in zip(blk, db):
            q += (r - s) * (r - s)
            a += g
            e += g * ((r - mucol) * rscol)
        out.append((s, q, a, e))
    return out


@pytest.mark.parametrize("backend", ["cython", "numba"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("outer,C,inner", [(1000, 64, 1), (700, 33, 1), (300, 5, 7), (900, 100, 1),
                                           (40, 3, 2)])
def test_column_pieces_are_row_order_sums(backend, dtype, outer, C, inner):
    rng = np.random.default_rng(outer + C)
    old = fastnorm.get_backend()
    fastnorm.set_backend(backend)
    try:
        k = kernels("batch")
        x3 = (rng.standard_normal((outer, C, inner)) * 3 + 5).astype(dtype)
        dy = rng.standard_normal((outer, C, inner)).astype(dtype)
        mu, rs = rng.standard_normal((1, C)), rng.random((1, C)) + 0.5
        rb = B._column_rows(C, inner)
        nb, ncols = -(-outer // rb), C * inner
        pm, pq, g1, g2 = (np.empty((nb, inner, C)) for _ in range(4))
        k.column_moments(x3, rb, pm, pq, np.empty(2 * nb * ncols), 1)
        k.column_grad_sums(dy, x3, mu, rs, rb, g1, g2, np.empty(2 * (nb + 1) * ncols), 1)
    finally:
        fastnorm.set_backend(old)
    ref = _reference(x3.reshape(outer, ncols).astype(np.float64), dy.reshape(outer, ncols).astype(np.float64),
                     rb, np.repeat(mu[0], inner), np.repeat(rs[0], inner))
    assert len(ref) == nb
    for b, (s, q, a, e) in enumerate(ref):
        np.testing.assert_array_equal(pm[b].T.ravel(), s)
        np.testing.assert_array_equal(pq[b].T.ravel(), q)
        np.testing.assert_array_equal(g1[b].T.ravel(), a)
        np.testing.assert_array_equal(g2[b].T.ravel(), e)
