"""moments / merge_moments: the laws a SyncBN rests on (any chunking, any merge order gives
the statistics of the whole), against NumPy."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import fastnorm.functional as fn


def assert_moments(m, x, axis):
    x64 = np.asarray(x, np.float64)
    mean = x64.mean(axis=axis)
    assert m.count == x.size // max(1, np.size(mean))
    assert np.shape(m.mean) == np.shape(mean)
    np.testing.assert_allclose(m.mean, mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(m.m2, ((x64 - x64.mean(axis=axis, keepdims=True)) ** 2).sum(axis=axis),
                               rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("axis", [None, 0, 1, -1, (0, 2), (0, 1), (1, 2), (0, 2, 3), (1, 3), (0, 1, 2, 3)])
def test_moments_match_numpy(backend, dtype, axis):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((3, 4, 5, 6)) * 2 + 7).astype(dtype)
    m = fn.moments(x, axis)
    assert_moments(m, x, axis)
    np.testing.assert_allclose(m.var(), np.asarray(x, np.float64).var(axis=axis), rtol=1e-10)
    np.testing.assert_allclose(m.var(ddof=1), np.asarray(x, np.float64).var(axis=axis, ddof=1), rtol=1e-10)


finite = st.floats(-1e3, 1e3, allow_nan=False, width=64)


@settings(max_examples=40, deadline=None)
@given(values=st.lists(finite, min_size=1, max_size=60),
       cuts=st.lists(st.integers(0, 60), max_size=6),
       order_seed=st.integers(0, 2**31 - 1))
def test_any_chunking_and_any_merge_order_give_the_whole(values, cuts, order_seed):
    x = np.array(values)
    bounds = sorted({0, len(x), *(c % (len(x) + 1) for c in cuts)})
    parts = [fn.moments(x[a:b]) for a, b in zip(bounds, bounds[1:])]
    parts.append(fn.moments(x[:0]))  # an empty part is the identity
    rng = np.random.default_rng(order_seed)
    # merge in a random tree: repeatedly merge two random neighbours or two random parts
    while len(parts) > 1:
        i, j = sorted(rng.choice(len(parts), 2, replace=False))
        merged = fn.merge_moments(parts[i], parts[j])
        parts = [p for k, p in enumerate(parts) if k not in (i, j)] + [merged]
    m = parts[0]
    whole = fn.moments(x)
    assert m.count == whole.count == len(x)
    scale = max(1.0, np.abs(x).max())
    np.testing.assert_allclose(m.mean, whole.mean, rtol=1e-12, atol=1e-12 * scale)
    np.testing.assert_allclose(m.m2, whole.m2, rtol=1e-9, atol=1e-9 * scale * scale)


@settings(max_examples=30, deadline=None)
@given(a=st.lists(finite, min_size=1, max_size=20), b=st.lists(finite, min_size=1, max_size=20),
       c=st.lists(finite, min_size=1, max_size=20))
def test_merge_is_associative_and_commutative(a, b, c):
    ma, mb, mc = (fn.moments(np.array(v)) for v in (a, b, c))
    left = fn.merge_moments(fn.merge_moments(ma, mb), mc)
    right = fn.merge_moments(ma, fn.merge_moments(mb, mc))
    swapped = fn.merge_moments(mc, fn.merge_moments(mb, ma))
    scale = max(1.0, max(abs(v) for v in a + b + c))
    for other in (right, swapped):
        assert other.count == left.count
        np.testing.assert_allclose(other.mean, left.mean, rtol=1e-12, atol=1e-12 * scale)
        np.testing.assert_allclose(other.m2, left.m2, rtol=1e-9, atol=1e-9 * scale * scale)


def test_per_channel_moments_merge_across_batches_like_sync_batch_norm(backend):
    """Moments per channel of each worker's batch, merged, equal those of the whole batch and
    give batch_norm's statistics of the concatenated batch (the one-allreduce SyncBN)."""
    rng = np.random.default_rng(3)
    shards = [rng.standard_normal((n, 3, 4, 5)) * 4 + 1e3 for n in (2, 5, 1)]
    m = fn.moments(shards[0], (0, 2, 3))
    for s in shards[1:]:
        m = fn.merge_moments(m, fn.moments(s, (0, 2, 3)))
    whole = np.concatenate(shards)
    _, mean, invstd = fn.batch_norm(whole, training=True, return_stats=True, eps=1e-5)
    assert m.count == whole.size // 3
    np.testing.assert_allclose(m.mean, mean, rtol=1e-14)
    np.testing.assert_allclose(1 / np.sqrt(m.var() + 1e-5), invstd, rtol=1e-12)


def test_large_offset_float32_moments_are_accurate(backend):
    rng = np.random.default_rng(4)
    x = (1e6 + rng.standard_normal((64, 3, 700))).astype(np.float32)
    m = fn.moments(x, (0, 2))
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(m.var(), x64.var(axis=(0, 2)), rtol=1e-9)


def test_empty_and_array_counts():
    e = fn.moments(np.empty((0, 3)), 0)
    assert e.count == 0 and np.isnan(e.mean).all()
    x = np.arange(6.0).reshape(2, 3)
    m = fn.moments(x, 0)
    same = fn.merge_moments(e, m)
    np.testing.assert_array_equal(same.mean, m.mean)
    np.testing.assert_array_equal(same.m2, m.m2)
    np.testing.assert_array_equal(fn.merge_moments(m, e).mean, m.mean)
