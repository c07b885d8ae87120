"""Shared fixtures: the backend under test, thread-count restore, and edge-case arrays.

The edge-case generator follows bottleneck's ``tests/util.py arrays()``: ``LAYOUTS`` turns a
C-contiguous array into the same values in another memory layout (Fortran, transposed,
negative strides, strided view, byte-swapped, unaligned, far into a larger buffer), and
``arrays()`` yields awkward values (NaN/inf rows, constant rows, empty arrays, a large offset
from zero, tiny and huge magnitudes) in every one of those layouts.

The CUDA kernels run in numba's CUDA simulator unless NUMBA_ENABLE_CUDASIM=0 is set (on a
machine with a GPU); numba reads the variable at its first import, hence here.
"""
import os

os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
# the parallel paths from smaller arrays than the defaults (2^20, 2^21 elements) ask: the
# tests' shapes (and the subprocesses they start) exceed these; test_dispatch_thresholds.py
# checks the defaults
os.environ.setdefault("FASTNORM_PARALLEL_MIN_WORK", str(1 << 18))
os.environ.setdefault("FASTNORM_NUMBA_PARALLEL_MIN_WORK", str(1 << 19))

# tests/distributed/ needs every MPI rank to run the same collectives: it runs only under
# mpiexec, started by tests/test_distributed.py (which sets FASTNORM_MPI_TESTS=1)
if os.environ.get("FASTNORM_MPI_TESTS") != "1":
    collect_ignore = ["distributed"]

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import fastnorm  # noqa: E402
from fastnorm import _dispatch  # noqa: E402


@pytest.fixture(params=_dispatch.BACKENDS)
def backend(request):
    """Runs the test once per CPU backend; restores the previous backend afterwards."""
    previous = fastnorm.get_backend()
    fastnorm.set_backend(request.param)
    yield request.param
    fastnorm.set_backend(previous)


@pytest.fixture(autouse=True)
def restore_num_threads():
    """Tests may call set_num_threads; the next test starts from the same count."""
    previous = fastnorm.get_num_threads()
    yield previous
    fastnorm.set_num_threads(previous)


@pytest.fixture(params=[np.float32, np.float64], ids=["f32", "f64"])
def dtype(request):
    return np.dtype(request.param)


# ---------------------------------------------------------------- layouts


def _fortran(a):
    return np.asfortranarray(a)


def _transposed(a):
    # a view whose memory holds a.T in C order: reversed strides
    return np.ascontiguousarray(a.T).T


def _negative_strides(a):
    idx = (slice(None, None, -1),) * a.ndim
    return np.ascontiguousarray(a[idx])[idx]


def _strided(a):
    big = np.full(tuple(2 * s + 1 for s in a.shape), np.nan, a.dtype)
    view = big[(slice(1, None, 2),) * a.ndim]
    view[...] = a
    return view


def _byteswapped(a):
    return a.astype(a.dtype.newbyteorder("S"))


def _unaligned(a):
    buf = np.empty(a.nbytes + a.itemsize, np.uint8)
    view = buf[1:1 + a.nbytes].view(a.dtype).reshape(a.shape)
    view[...] = a
    return view


def _far_in_buffer(a):
    # data pointer well away from the allocation's start, NaN guards on both sides
    pad = 1 << 16
    buf = np.full(a.size + 2 * pad, np.nan, a.dtype)
    view = buf[pad:pad + a.size].reshape(a.shape)
    view[...] = a
    return view


def _c_copy(a):
    return np.array(a, order="C", copy=True)


LAYOUTS = {
    "C": _c_copy,
    "F": _fortran,
    "transposed": _transposed,
    "negative_strides": _negative_strides,
    "strided": _strided,
    "byteswapped": _byteswapped,
    "unaligned": _unaligned,
    "far_in_buffer": _far_in_buffer,
}


def check_layout(name, a, b):
    """b (made by LAYOUTS[name] from a) holds a's values; for sanity, not a fastnorm test."""
    assert b.shape == a.shape
    np.testing.assert_array_equal(b, a)
    if name == "byteswapped":
        assert not b.dtype.isnative
    if name == "unaligned" and a.size:
        assert not b.flags.aligned
    if name in ("F", "transposed", "negative_strides", "strided") and a.ndim > 1 and min(a.shape) > 1:
        assert not b.flags.c_contiguous


@pytest.fixture(params=list(LAYOUTS))
def layout(request):
    """(name, function): the function returns its argument's values in that layout."""
    return request.param, LAYOUTS[request.param]


# ---------------------------------------------------------------- edge-case values


def _values(dtype, seed=0):
    """(label, C array) pairs of awkward values; rows are the last axis."""
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)

    def randn(*shape):
        return rng.standard_normal(shape).astype(dt)

    yield "random_2d", randn(7, 19)
    yield "random_3d", randn(3, 4, 21)
    yield "one_column", randn(5, 1)
    yield "one_row", randn(1, 37)
    a = randn(6, 16)
    a[2, 5] = np.nan
    yield "nan_row", a
    a = randn(6, 16)
    a[1, 0] = np.inf
    a[4, 3] = -np.inf
    yield "inf_rows", a
    a = randn(5, 24)
    a[3] = 2.5
    yield "constant_row", a
    yield "large_offset", (1e6 + rng.standard_normal((8, 33))).astype(dt)
    yield "tiny", (1e-30 * rng.standard_normal((4, 9))).astype(dt)
    yield "huge", (1e18 * rng.standard_normal((4, 9))).astype(dt)
    yield "empty_rows", np.empty((0, 12), dt)
    yield "empty_normalized", np.empty((4, 0), dt)
    yield "empty_middle", np.empty((3, 0, 5), dt)


def arrays(dtype, seed=0, layouts=LAYOUTS):
    """Yields (label, layout_name, array, c_array): every edge value in every layout."""
    for label, c in _values(dtype, seed):
        for name, make in layouts.items():
            yield label, name, make(c), c
