"""SyncBatchNorm and allreduce_grads_ over the ranks of MPI.COMM_WORLD against one process on
the concatenated batch: fastnorm's nn.BatchNorm* and torch.nn.BatchNorm* (forward, running
statistics, dx, dweight, dbias over three training steps, then eval), identical results on
every rank, a 1-rank communicator equal to BatchNorm bit for bit, and bad input raising on
every rank."""
import numpy as np
import pytest
import torch
from mpi4py import MPI

from fastnorm import nn
from fastnorm.distributed import (SyncBatchNorm, SyncBatchNorm1d, SyncBatchNorm2d,
                                  SyncBatchNorm3d, allreduce_grads_)

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
pytestmark = pytest.mark.skipif(size < 2, reason="run under mpiexec -n 2 (or more)")

# float32: the merge order of the statistics differs from the single process's, so results
# agree to rounding, not bit for bit
TOL = {np.float32: 1e-6, np.float64: 1e-12}


def close(a, b, dtype, scale=1.0):
    t = TOL[dtype] * scale
    b = np.asarray(b)
    np.testing.assert_allclose(a, b, rtol=t, atol=t * max(1.0, np.abs(b).max(initial=0)))


def same_on_every_rank(a):
    a = np.ascontiguousarray(a)
    table = np.empty((size,) + a.shape, a.dtype)
    comm.Allgather(a, table)
    for r in range(size):
        assert np.array_equal(table[r], a, equal_nan=True), f"rank {r} differs from rank {rank}"


def shard(n):
    """Rows [lo, hi) of a global batch of n for this rank: uneven on purpose (rank r gets
    more rows than rank r - 1)."""
    weights = np.arange(1, size + 1)
    bounds = np.concatenate(([0], np.cumsum(weights))) * n // weights.sum()
    return int(bounds[rank]), int(bounds[rank + 1])


def torch_dtype(dtype):
    return torch.float32 if dtype == np.float32 else torch.float64


CASES = [  # (sync class, single-process class, torch class, global shape, axis)
    (SyncBatchNorm2d, nn.BatchNorm2d, torch.nn.BatchNorm2d, (12, 3, 5, 7), 1),
    (SyncBatchNorm1d, nn.BatchNorm1d, torch.nn.BatchNorm1d, (24, 5), 1),
    (SyncBatchNorm1d, nn.BatchNorm1d, torch.nn.BatchNorm1d, (10, 4, 40), 1),
    (SyncBatchNorm3d, nn.BatchNorm3d, torch.nn.BatchNorm3d, (6, 2, 3, 4, 5), 1),
    (SyncBatchNorm, nn.BatchNorm2d, None, (12, 5, 4, 3), -1),  # channels-last
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", CASES, ids=["2d", "1d-NC", "1d-NCL", "3d", "channels-last"])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_sync_equals_one_process_on_the_concatenated_batch(case, dtype, momentum):
    sync_cls, bn_cls, torch_cls, shape, axis = case
    C = shape[axis]
    rng = np.random.default_rng(7)  # the same global data on every rank
    sync = sync_cls(C, momentum=momentum, dtype=dtype, axis=axis)
    single = bn_cls(C, momentum=momentum, dtype=dtype, axis=axis)
    theirs = torch_cls(C, momentum=momentum, dtype=torch_dtype(dtype)) if torch_cls else None
    w0 = (1 + rng.random(C)).astype(dtype)
    for layer in (sync, single):
        layer.params["weight"][...] = w0
    if theirs is not None:
        with torch.no_grad():
            theirs.weight.copy_(torch.tensor(w0))
    lo, hi = shard(shape[0])
    for step in range(3):
        x = (3 * rng.standard_normal(shape) + step - 2).astype(dtype)
        dy = rng.standard_normal(shape).astype(dtype)
        y = sync(x[lo:hi])
        y1 = single(x)
        close(y, y1[lo:hi], dtype, 4)
        for k in ("running_mean", "running_var"):
            close(sync.buffers[k], single.buffers[k], dtype)
            same_on_every_rank(sync.buffers[k])
        assert int(sync.buffers["num_batches_tracked"]) == step + 1
        dx = sync.backward(dy[lo:hi])
        dx1 = single.backward(dy)
        close(dx, dx1[lo:hi], dtype, 10)
        local = {k: g.copy() for k, g in sync.grads.items()}
        allreduce_grads_([sync.grads], comm)  # the mean of the ranks' own sums
        for k, g in sync.grads.items():
            same_on_every_rank(g)
            close(g * size, single.grads[k], dtype, 10)
            assert not np.array_equal(local[k], g) or size == 1
        if theirs is not None:
            xt = torch.tensor(x, requires_grad=True)
            yt = theirs(xt)
            yt.backward(torch.tensor(dy))
            close(y, yt.detach().numpy()[lo:hi], dtype, 20)
            close(dx, xt.grad.numpy()[lo:hi], dtype, 100)
            close(sync.buffers["running_var"], theirs.running_var.numpy(), dtype, 10)
            for k, p in theirs.named_parameters():
                close(sync.grads[k] * size, p.grad.numpy(), dtype, 100)
                with torch.no_grad():
                    p -= 0.1 * p.grad
                    p.grad = None
        for k in sync.params:  # the same SGD step everywhere
            sync.params[k] -= (0.1 * sync.grads[k] * size).astype(dtype)
            single.params[k] -= (0.1 * single.grads[k]).astype(dtype)
    sync.eval()
    single.eval()
    x = rng.standard_normal(shape).astype(dtype)
    close(sync(x[lo:hi]), single(x)[lo:hi], dtype, 10)


def test_state_dict_keys_are_torch_sync_batch_norms():
    theirs = torch.nn.SyncBatchNorm(4)
    ours = SyncBatchNorm(4)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict({k: t.numpy() for k, t in theirs.state_dict().items()})
    assert set(SyncBatchNorm(4, affine=False, track_running_stats=False).state_dict()) == set(
        torch.nn.SyncBatchNorm(4, affine=False, track_running_stats=False).state_dict())


@pytest.mark.parametrize("shape,cls,bn_cls", [((6, 3, 4, 4), SyncBatchNorm2d, nn.BatchNorm2d),
                                              ((9, 4), SyncBatchNorm1d, nn.BatchNorm1d)])
def test_one_rank_communicator_is_batch_norm_bit_for_bit(shape, cls, bn_cls):
    alone = comm.Split(color=rank, key=0)
    try:
        rng = np.random.default_rng(rank)
        sync, bn = cls(shape[1], comm=alone), bn_cls(shape[1])
        for _ in range(2):
            x = rng.standard_normal(shape).astype(np.float32)
            dy = rng.standard_normal(shape).astype(np.float32)
            assert np.array_equal(sync(x), bn(x))
            assert np.array_equal(sync.backward(dy), bn.backward(dy))
            for k in bn.grads:
                assert np.array_equal(sync.grads[k], bn.grads[k])
            for k, a in bn.state_dict().items():
                assert np.array_equal(sync.state_dict()[k], a), k
    finally:
        alone.Free()


def test_statistics_identical_on_every_rank():
    rng = np.random.default_rng(100 + rank)  # different data on every rank
    sync = SyncBatchNorm2d(4, dtype=np.float64)
    y = sync(rng.standard_normal((3 + rank, 4, 6, 6)))
    _, _, mean, invstd, n = sync._cache
    same_on_every_rank(mean)
    same_on_every_rank(invstd)
    assert n == sum(3 + r for r in range(size)) * 36
    assert y.shape == (3 + rank, 4, 6, 6)


class CountingComm(MPI.Intracomm):
    """COMM_WORLD, counting the collectives called on it."""

    def Allgather(self, *args, **kwargs):
        self.calls = getattr(self, "calls", 0) + 1
        return super().Allgather(*args, **kwargs)


def test_one_gather_per_forward_and_backward_after_the_first_check():
    counting = CountingComm(comm)
    sync = SyncBatchNorm1d(3, comm=counting)
    x = np.random.default_rng(rank).standard_normal((4, 3)).astype(np.float32)
    sync(x)
    assert counting.calls == 2  # the channels/dtype header, then the moments
    for step in range(2):
        sync(x)
        assert counting.calls == 3 + 2 * step
        sync.backward(np.ones_like(x))
        assert counting.calls == 4 + 2 * step
    sync.eval()
    sync(x)
    assert counting.calls == 6  # eval: running statistics, no communication


def test_convert_sync_batchnorm_shares_the_arrays():
    bn = nn.BatchNorm1d(3, momentum=None)
    sync = SyncBatchNorm.convert_sync_batchnorm(bn)
    assert sync.params["weight"] is bn.params["weight"] and sync.momentum is None
    sync(np.random.default_rng(rank).standard_normal((4, 3)).astype(np.float32))
    assert int(bn.buffers["num_batches_tracked"]) == 1
    with pytest.raises(TypeError, match="BatchNorm"):
        SyncBatchNorm.convert_sync_batchnorm(nn.LayerNorm(3))


def test_empty_shard_on_one_rank():
    x = np.random.default_rng(5).standard_normal((8, 3))
    bounds = np.linspace(0, 8, size).astype(int)  # rank 0 gets no rows
    lo, hi = (0, 0) if rank == 0 else (int(bounds[rank - 1]), int(bounds[rank]))
    sync, single = SyncBatchNorm1d(3, dtype=np.float64), nn.BatchNorm1d(3, dtype=np.float64)
    y, y1 = sync(x[lo:hi]), single(x)
    assert y.shape == (hi - lo, 3)
    close(y, y1[lo:hi], np.float64)
    close(sync.buffers["running_var"], single.buffers["running_var"], np.float64)
    dy = np.random.default_rng(6).standard_normal((8, 3))
    close(sync.backward(dy[lo:hi]), single.backward(dy)[lo:hi], np.float64)


def test_allreduce_grads_averages_in_place_one_buffer_per_dtype():
    def grads_of(r):
        g = np.random.default_rng(r)
        return [{"weight": g.standard_normal((3, 4)).astype(np.float32), "bias": g.standard_normal(3)},
                {"weight": g.standard_normal(5).astype(np.float32), "bias": None},
                [g.standard_normal((2, 2))[:, ::-1].copy()]]
    mine = grads_of(rank)
    keep = mine[0]["weight"]
    out = allreduce_grads_(mine, comm)
    assert out is mine and mine[0]["weight"] is keep and mine[1]["bias"] is None
    every = [grads_of(r) for r in range(size)]
    for got, *theirs in zip(_leaves(mine), *(_leaves(g) for g in every)):
        want = sum(t.astype(np.float64) for t in theirs) / size
        assert got.dtype in (np.float32, np.float64)
        close(got, want, got.dtype.type, 4)
        same_on_every_rank(got)


def _leaves(grads):
    out = []
    for g in grads:
        items = g.values() if isinstance(g, dict) else g
        out.extend(a for a in items if a is not None)
    return out


def test_allreduce_grads_layouts_that_differ_raise_on_every_rank():
    g = [np.zeros(3 + rank, np.float32)]
    with pytest.raises(ValueError, match="differ in number, size, dtype or shape"):
        allreduce_grads_(g, comm)
    bad = [np.zeros(3, np.int64)] if rank == 1 else [np.zeros(3, np.float32)]
    with pytest.raises((TypeError, ValueError), match="float32 or float64|could not use their input"):
        allreduce_grads_(bad, comm)
    allreduce_grads_([np.zeros(2)], comm)  # the communicator still works


def test_ranks_with_different_channel_counts_raise_on_every_rank():
    C = 3 + rank
    sync = SyncBatchNorm1d(C)
    with pytest.raises(ValueError, match=r"ranks disagree on the input: channels per rank \[3, 4"):
        sync(np.ones((4, C), np.float32))


def test_bad_input_on_one_rank_raises_on_every_rank():
    sync = SyncBatchNorm2d(3)
    x = np.ones((2, 3, 2, 2), np.float64 if rank == 1 else np.float32)
    with pytest.raises((TypeError, ValueError), match="float32 parameters|rank\\(s\\) \\[1\\]"):
        sync(x)
    x = np.random.default_rng(rank).standard_normal((2, 3, 2, 2)).astype(np.float32)
    y = sync(x)
    bad = x.astype(np.float64) if rank == 1 else x  # after the first forward: the flag path
    with pytest.raises((TypeError, ValueError), match="float32 parameters|rank\\(s\\) \\[1\\]"):
        sync(bad)
    y = sync(x)
    dy = np.ones((2, 3, 2, 3) if rank == 1 else y.shape, np.float32)
    with pytest.raises(ValueError, match="same shape|rank\\(s\\) \\[1\\]"):
        sync.backward(dy)
    sync.backward(np.ones_like(y))  # still in step
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        sync(np.ones((1 if rank == 0 else 0, 3, 1, 1), np.float32))
