"""fastnorm.random: Philox4x32-10 against Random123's published vectors and an independent
implementation, the stream's layout, and the same bits on every backend, thread count and
slice."""
import numpy as np
import pytest

import fastnorm
import fastnorm.random as fr

import reference_dropout as rd

# Random123 kat_vectors (philox4x32 10): counter, key -> output
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("ctr,key,expected", KAT)
def test_known_answers(ctr, key, expected):
    assert fr.philox4x32_10(ctr, key) == expected
    assert rd.philox4x32_10(ctr, key) == expected


def test_block_function_matches_the_independent_reference():
    rng = np.random.default_rng(0)
    for _ in range(200):
        ctr = tuple(int(v) for v in rng.integers(0, 1 << 32, 4))
        key = tuple(int(v) for v in rng.integers(0, 1 << 32, 2))
        assert fr.philox4x32_10(ctr, key) == rd.philox4x32_10(ctr, key)


@pytest.mark.parametrize("seed", [0, 1, 0xDEADBEEF, (1 << 64) - 1, 123456789012345678])
@pytest.mark.parametrize("stream", [0, 1])
def test_stream_layout(backend, seed, stream):
    for offset, n in ((0, 600), (3, 77), (255, 2), (1000, 300), ((1 << 40) + 5, 260)):
        got = fr.random_bits(n, seed, offset=offset, stream=stream)
        np.testing.assert_array_equal(got, rd.bits(seed, n, offset, stream))


def test_bits_identical_across_backends_threads_and_slices():
    n = (1 << 19) + 1234  # above both backends' parallel thresholds
    results = []
    for b in fastnorm._dispatch.BACKENDS:
        fastnorm.set_backend(b)
        for t in (1, 2, 3):
            fastnorm.set_num_threads(t)
            results.append(fr.random_bits(n, seed=99))
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])
    full = results[0]
    for lo, hi in ((0, 1), (5, 300), (12345, 200000), (n - 7, n)):
        np.testing.assert_array_equal(fr.random_bits(hi - lo, seed=99, offset=lo), full[lo:hi])


def test_bits_are_uniform_and_independent():
    b = fr.random_bits(1 << 20, seed=5)
    # each of the 32 bit positions is set half the time (within 5 sigma)
    ones = np.unpackbits(b.view(np.uint8)).reshape(-1, 32).mean(axis=0)
    assert np.abs(ones - 0.5).max() < 5 * 0.5 / np.sqrt(b.size)
    u = b / 2.0 ** 32
    assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 5 / np.sqrt(b.size)
    assert abs(np.corrcoef(u[:-64], u[64:])[0, 1]) < 5 / np.sqrt(b.size)  # words of one block
    assert len(np.unique(b)) > 0.99 * b.size


def test_uniform_and_normal(backend, dtype):
    u = fr.uniform((1000, 100), -2.0, 3.0, seed=1, dtype=dtype)
    assert u.dtype == dtype and u.shape == (1000, 100)
    assert u.min() >= -2.0 and u.max() <= 3.0
    assert abs(u.mean() - 0.5) < 5 * 5 / np.sqrt(12 * u.size)
    expected = -2.0 + 5.0 * (rd.bits(1, 500) * 2.0 ** -32)
    np.testing.assert_array_equal(u.ravel()[:500], expected.astype(dtype))
    z = fr.normal(200000, 1.0, 2.0, seed=2, dtype=dtype)
    assert abs(z.mean() - 1.0) < 5 * 2 / np.sqrt(z.size)
    assert abs(z.std() - 2.0) < 0.02
    ref = 1.0 + 2.0 * rd.normals(2, 300)
    # the kernels' log and cos (fdlibm's, vectorized) are within about 1 ulp of NumPy's: a few
    # ulps of 1 + 2 z where it cancels to near 0
    np.testing.assert_allclose(z[:300], ref.astype(dtype), rtol=1e-6 if dtype == np.float32 else 1e-14,
                               atol=0 if dtype == np.float32 else 1e-14)
    # a slice regenerates alone
    np.testing.assert_array_equal(fr.normal(50, 1.0, 2.0, seed=2, dtype=dtype, offset=1001), z[1001:1051])


def test_normal_identical_across_backends_and_threads():
    results = []
    for b in fastnorm._dispatch.BACKENDS:
        fastnorm.set_backend(b)
        for t in (1, 2):
            fastnorm.set_num_threads(t)
            results.append(fr.normal(300001, seed=4))
            results.append(fr.uniform(600001, seed=4, dtype=np.float32))
    for r in results[2:]:
        np.testing.assert_array_equal(r, results[len(r) == 600001])


def test_seed_sequence_is_reproducible_and_distinct():
    fr.manual_seed(7)
    a = [fr.next_seed() for _ in range(5)]
    assert fr.initial_seed() == 7
    fr.manual_seed(7)
    b = [fr.next_seed() for _ in range(5)]
    assert a == b and len(set(a)) == 5
    w = rd.philox4x32_10((0, 0, 2, 0), (7, 0))
    assert a[0] == w[0] | (w[1] << 32)
    fr.manual_seed(8)
    assert fr.next_seed() not in a
    # seed=None draws from the sequence
    fr.manual_seed(3)
    x = fr.random_bits(10)
    fr.manual_seed(3)
    np.testing.assert_array_equal(x, fr.random_bits(10, seed=fr.next_seed()))


def test_bad_inputs():
    with pytest.raises(TypeError, match="seed"):
        fr.random_bits(3, seed=1.5)
    with pytest.raises(TypeError, match="seed"):
        fr.random_bits(3, seed=True)
    with pytest.raises(ValueError, match="seed"):
        fr.random_bits(3, seed=-1)
    with pytest.raises(ValueError, match="seed"):
        fr.random_bits(3, seed=1 << 64)
    with pytest.raises(ValueError, match="shape"):
        fr.random_bits((2, -1), seed=0)
    with pytest.raises(ValueError, match="offset"):
        fr.random_bits(3, seed=0, offset=-1)
    with pytest.raises(ValueError, match="stream"):
        fr.random_bits(3, seed=0, stream=-1)
    with pytest.raises(TypeError, match="dtype"):
        fr.uniform(3, seed=0, dtype=np.int32)
    with pytest.raises(ValueError, match="low <= high"):
        fr.uniform(3, 2.0, 1.0, seed=0)
    with pytest.raises(ValueError, match="std"):
        fr.normal(3, 0.0, -1.0, seed=0)
    with pytest.raises(ValueError, match="shape"):
        fr.uniform(3, seed=0, out=np.empty(4))
    with pytest.raises(ValueError, match="counter of 4"):
        fr.philox4x32_10((0, 0), (0, 0))
    assert fr.random_bits(0, seed=0).shape == (0,)
    assert fr.normal((0, 3), seed=0).shape == (0, 3)


def test_cos2pi_quadrants_and_accuracy():
    """The normals' cos(2 pi k / 2^32) (fdlibm kernels after an exact quadrant reduction) at
    every quadrant boundary and at random words, against NumPy's cos (whose own argument
    2 pi k / 2^32 carries up to 9e-16 of rounding)."""
    from fastnorm.kernels.numba.dropout import _cos2pi
    edges = [q * 2 ** 30 + d for q in range(4) for d in (-(2 ** 29) - 1, -(2 ** 29), -1, 0, 1, 2 ** 29 - 1)]
    ks = np.array([k % 2 ** 32 for k in edges] + [2 ** 32 - 1], np.uint64)
    ks = np.concatenate([ks, np.random.default_rng(0).integers(0, 2 ** 32, 20000, dtype=np.uint64)])
    got = np.array([_cos2pi(np.uint32(k)) for k in ks])
    want = np.cos(2 * np.pi * (ks.astype(np.float64) / 2.0 ** 32))
    np.testing.assert_allclose(got, want, rtol=0, atol=1.5e-15)
    assert _cos2pi(np.uint32(0)) == 1.0 and _cos2pi(np.uint32(2 ** 31)) == -1.0
