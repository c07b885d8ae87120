"""Data-parallel training over MPI (mpi4py): synchronized BatchNorm and gradient averaging.

Each process (an MPI rank) holds a shard of the global batch and the same model:

- ``SyncBatchNorm`` (and ``SyncBatchNorm1d/2d/3d``) normalize with the statistics of the
  global batch (``torch.nn.SyncBatchNorm``): each rank takes the float64 moments
  (count, mean, M2) of its shard with ``fastnorm.functional.moments``, one ``Allgather``
  shares them, and every rank merges all ranks' moments in rank order with Chan's formula
  (``merge_moments``), so the statistics are bitwise the same on every rank. One
  synchronization gives mean and variance together (not a pass for the mean, then another
  for the variance). The backward gathers the two per-channel sums (sum dy, sum dy * xhat)
  the same way and sums them in rank order.
- ``allreduce_grads_(grads, comm)`` averages gradients over the ranks in place: all the
  gradients of one dtype packed in one buffer, one ``Allreduce(SUM)`` per dtype.

Every collective carries an error flag, and before the first one whose size depends on the
model the ranks exchange a small header (the channel count, the dtype): a rank given bad input,
or ranks that disagree, raise ``ValueError`` on every rank instead of leaving the others
waiting.

Run with ``mpiexec -n 2 python -m mpi4py your_script.py`` (mpi4py's runner aborts all ranks
when one raises). Requires ``pip install 'fastnorm[dist]'``; ``import fastnorm`` alone never
imports mpi4py.
"""
import zlib

import numpy as np

try:
    from mpi4py import MPI
except ImportError as e:  # pragma: no cover - depends on the environment
    from ._mpirun import INSTALL_HINT

    raise ImportError(f"fastnorm.distributed needs mpi4py and an MPI library: {INSTALL_HINT}") from e

from . import _validation as v
from .ops import batch as F
from ._dispatch import threads_for
from .nn.batch import _BatchNorm

__all__ = ["SyncBatchNorm", "SyncBatchNorm1d", "SyncBatchNorm2d", "SyncBatchNorm3d",
           "allreduce_grads_", "allreduce_mean_", "MPI"]

_F64 = np.dtype(np.float64)


def _comm(comm):
    comm = MPI.COMM_WORLD if comm is None else comm
    if not isinstance(comm, MPI.Intracomm):
        raise TypeError(f"comm must be an mpi4py intracommunicator (e.g. MPI.COMM_WORLD), got {type(comm).__name__}")
    return comm


def _agree(comm, who, error, fields):
    """Allgather (error flag, *fields) (int64) over the ranks; re-raise this rank's ``error``
    and raise ValueError on the others when any rank failed. Returns the (size, len(fields))
    table of every rank's fields."""
    header = np.array([error is not None, *fields], np.int64)
    table = np.empty((comm.Get_size(), header.size), np.int64)
    comm.Allgather(header, table)
    _raise_if_failed(comm, who, error, table[:, 0])
    return table[:, 1:]


def _raise_if_failed(comm, who, error, flags):
    """This rank's ``error``, or ValueError when another rank's error flag is set."""
    if error is not None:
        raise error
    failed = np.flatnonzero(flags).tolist()
    if failed:
        raise ValueError(f"{who}: rank(s) {failed} of {comm.Get_size()} could not use their input "
                         "(their own error says why); every rank stops here instead of waiting")


def _gather_rows(comm, row):
    """Every rank's float64 ``row`` (same length on all), as a (size, len) table."""
    table = np.empty((comm.Get_size(), row.size), _F64)
    comm.Allgather(np.ascontiguousarray(row, _F64), table)
    return table


class SyncBatchNorm(_BatchNorm):
    """``torch.nn.SyncBatchNorm``: BatchNorm whose training statistics are those of the
    global batch, the concatenation of every rank's input, over the ranks of ``comm``
    (an mpi4py communicator, default ``MPI.COMM_WORLD``). Input (N, C, *) with C at ``axis``
    (channels-last: ``axis=-1``); any number of dimensions >= 2 (``SyncBatchNorm1d/2d/3d``
    check 2-3, 4 and 5 as BatchNorm1d/2d/3d do).

    Training forward, with (n_r, mean_r, M2_r) the float64 moments of rank r's shard::

        (n, mean, M2) = merge(merge(rank 0, rank 1), rank 2) ...     (Chan: mean, M2 exact)
        y = (x - mean) / sqrt(M2 / n + eps) * weight + bias
        running_mean <- (1 - momentum) running_mean + momentum mean
        running_var  <- (1 - momentum) running_var  + momentum M2 / (n - 1)   (unbiased)

    one ``Allgather`` of (n_r, mean_r, M2_r) per forward (the layer's first forward on a
    communicator also gathers a 3-integer header: do the ranks agree on channels and dtype?).
    Backward, one ``Allgather`` too, with the global sums
    S1 = sum dy and S2 = sum dy * xhat gathered the same way::

        dx = weight * invstd * (dy - S1 / n - xhat * S2 / n)

    while ``grads`` (dweight = sum dy * xhat, dbias = sum dy) are this rank's own sums, as in
    torch: ``allreduce_grads_`` averages them with the other parameters' gradients.

    Every rank merges the gathered rows in rank order, so results are bitwise identical on
    all ranks. Against one process normalizing the concatenated batch the float64 statistics
    agree to rounding (the single process merges its fixed pieces in another order): float32
    results came out bitwise equal in every shape tested, float64 within a few ulps; with one rank they are bitwise ``nn.BatchNorm``'s. In eval mode the running statistics
    are used and nothing is communicated (torch does the same). The state_dict is
    BatchNorm's (weight, bias, running_mean, running_var, num_batches_tracked), as torch's.

    >>> import numpy as np
    >>> from fastnorm import nn
    >>> from fastnorm.distributed import SyncBatchNorm2d
    >>> x = np.random.default_rng(0).standard_normal((4, 3, 5, 5)).astype(np.float32)
    >>> sbn, bn = SyncBatchNorm2d(3), nn.BatchNorm2d(3)   # comm=MPI.COMM_WORLD, here 1 rank
    >>> bool(np.array_equal(sbn(x), bn(x))), sorted(sbn.state_dict()) == sorted(bn.state_dict())
    (True, True)
    >>> dy = np.ones_like(x); bool(np.array_equal(sbn.backward(dy), bn.backward(dy)))
    True
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, dtype=np.float32, *, axis=1, comm=None):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, dtype, axis=axis)
        self.comm = _comm(comm)
        self._agreed = None  # the communicator whose ranks were checked to agree on C and dtype

    @classmethod
    def convert_sync_batchnorm(cls, bn, comm=None):
        """A SyncBatchNorm sharing ``bn``'s parameter and buffer arrays (an optimizer holding
        them keeps working), like ``torch.nn.SyncBatchNorm.convert_sync_batchnorm``."""
        if not isinstance(bn, _BatchNorm):
            raise TypeError(f"expected an nn.BatchNorm1d/2d/3d, got {type(bn).__name__}")
        new = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats,
                  bn.dtype, axis=bn.axis, comm=comm)
        new.params, new.buffers, new.training = bn.params, bn.buffers, bn.training
        return new

    def _check_dims(self, x):
        x = self._check_input(x)
        if self._dims and x.ndim not in self._dims or x.ndim < 2:
            want = " or ".join(f"{d}D" for d in self._dims) if self._dims else "at least 2D"
            raise ValueError(f"{type(self).__name__}: expected {want} input (got {x.ndim}D input)")
        return x

    def _local_moments(self, x):
        x = self._check_dims(x)
        F._check_x(x)
        axis = v.normalize_axis(self.axis, x.ndim)
        if x.shape[axis] != self.num_features:
            raise ValueError(f"{type(self).__name__}({self.num_features}): input of shape {x.shape} "
                             f"has {x.shape[axis]} channels on axis {axis}")
        C = self.num_features
        count = x.size // C if C else 0
        if count == 0:
            return x, axis, np.concatenate(([0.0], np.zeros(2 * C)))
        m = F.moments(x, tuple(a for a in range(x.ndim) if a != axis))
        return x, axis, np.concatenate(([float(m.count)], m.mean, m.m2))

    def forward(self, x):
        if not self.training:
            return super().forward(x)  # running (or this rank's) statistics: no communication
        name, C, comm = type(self).__name__, self.num_features, self.comm
        error, row = None, np.zeros(1 + 2 * C)
        try:
            x, axis, row = self._local_moments(x)
        except Exception as e:  # noqa: BLE001 - re-raised after the other ranks are told
            error = e
        if self._agreed is not comm:
            # once per layer and communicator: do the ranks' layers agree on C and dtype?
            # (then every later gather has the same size on every rank)
            table = _agree(comm, name, error, (C, self.dtype.itemsize))
            if len(set(table[:, 0].tolist())) > 1 or len(set(table[:, 1].tolist())) > 1:
                raise ValueError(f"{name}: the ranks disagree on the input: channels per rank "
                                 f"{table[:, 0].tolist()}, bytes per value {table[:, 1].tolist()}; "
                                 "every rank must give the same number of channels and dtype")
            self._agreed = comm
        rows = _gather_rows(comm, np.concatenate(([error is not None], row)))
        _raise_if_failed(comm, name, error, rows[:, 0])  # flags came with the moments
        rows = rows[:, 1:]
        m = F.Moments(int(rows[0, 0]), rows[0, 1:C + 1], rows[0, C + 1:])
        for r in range(1, rows.shape[0]):
            m = F.merge_moments(m, F.Moments(int(rows[r, 0]), rows[r, 1:C + 1], rows[r, C + 1:]))
        n = m.count
        if n <= 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got {n} "
                             f"over {comm.Get_size()} rank(s) (this rank's input: {x.shape})")
        mean, var = np.asarray(m.mean, _F64), m.m2 / n
        if self.track_running_stats:
            nbt = self.buffers["num_batches_tracked"]
            nbt += 1
            factor = F._momentum(self.momentum, nbt)
            rm, rv = self._running()
            with np.errstate(divide="ignore", invalid="ignore"):
                F._update(rm, (1.0 - factor) * np.asarray(rm, _F64) + factor * mean)
                F._update(rv, (1.0 - factor) * np.asarray(rv, _F64) + factor * (m.m2 / (n - 1)))
        w, b = self._affine()
        # the batch statistics as "running" ones: batch_norm's own arithmetic, bit for bit
        y, mean, invstd = F.batch_norm(x, mean, var, w, b, training=False, eps=self.eps,
                                       axis=axis, return_stats=True)
        self._cache = (x, axis, mean, invstd, n)
        return y

    def backward(self, dy):
        x, axis, mean, invstd, n = self._cached()
        C, comm = self.num_features, self.comm
        error = dx = None
        s = np.zeros((2, C))
        try:
            dy = v.grad_like(dy, x)
            x3 = F._view3(x, axis)[0]
            dy3 = v.contiguous(dy).reshape(x3.shape)
            dx = np.empty(x.shape, x.dtype)
            if x.size:
                s[0], s[1] = F._channel_grad_sums(dy3, x3, mean, invstd, threads_for(x.size))
        except Exception as e:  # noqa: BLE001 - re-raised after the other ranks are told
            error = e
        rows = _gather_rows(comm, np.concatenate(([error is not None], s.ravel())))
        _raise_if_failed(comm, type(self).__name__, error, rows[:, 0])  # flags came with the sums
        total = rows[0, 1:]
        for r in range(1, rows.shape[0]):
            total = total + rows[r, 1:]
        s1, s2 = total[:C], total[C:]
        w, b = self._affine()
        if x.size:
            F._bn_grad_apply(dy3, x3, mean, invstd, w, s1, s2, n, dx.reshape(x3.shape),
                             threads_for(x.size))
        dt = x.dtype  # parameter gradients of this rank's data, as torch's: allreduce_grads_ averages them
        self._set_grads(None if w is None else s[1].astype(dt), None if b is None else s[0].astype(dt))
        return dx


class SyncBatchNorm1d(SyncBatchNorm):
    """``SyncBatchNorm`` for (N, C) or (N, C, L) input, as ``nn.BatchNorm1d``."""

    _dims = (2, 3)


class SyncBatchNorm2d(SyncBatchNorm):
    """``SyncBatchNorm`` for (N, C, H, W) input, as ``nn.BatchNorm2d``."""

    _dims = (4,)


class SyncBatchNorm3d(SyncBatchNorm):
    """``SyncBatchNorm`` for (N, C, D, H, W) input, as ``nn.BatchNorm3d``."""

    _dims = (5,)


def _grad_arrays(grads):
    """The arrays of ``grads``: a dict (its values), a list/tuple of arrays or of dicts (a
    model's layers' ``.grads``), nested; None entries are skipped."""
    if grads is None:
        return []
    if isinstance(grads, dict):
        grads = list(grads.values())
    if isinstance(grads, np.ndarray):
        return [grads]
    if not isinstance(grads, (list, tuple)):
        raise TypeError(f"grads must be arrays, dicts of arrays or lists of them, got {type(grads).__name__}")
    out = []
    for g in grads:
        if isinstance(g, (dict, list, tuple)) or g is None:
            out.extend(_grad_arrays(g))
        elif type(g) is not np.ndarray:
            raise TypeError(f"grads must be numpy arrays (averaged in place), got {type(g).__name__}")
        else:
            out.append(g)
    return out


def allreduce_grads_(grads, comm=None, *, check=True):
    """Average gradients over the ranks of ``comm`` in place (data-parallel training)::

        g <- (g_rank0 + g_rank1 + ... ) / size

    ``grads``: a dict name -> array (a layer's ``.grads``), a list of arrays, or a list of
    such dicts (every layer of a model), the same structure on every rank. All the float
    arrays of one dtype are packed into one contiguous buffer and summed with a single
    ``Allreduce(SUM)`` (so a model of many small tensors costs one message per dtype), then
    divided by the number of ranks and copied back. ``check`` (default True) first gathers
    a 3-integer signature (number of arrays, elements, a CRC of the dtypes and shapes) so
    that ranks with different models raise ValueError on every rank instead of exchanging
    mismatched buffers.

    With each rank's loss the mean over its shard of equal size, the averaged gradient is
    the gradient of the mean loss over the global batch (torch DDP's convention). MPICH and
    Open MPI give every rank the same sum for 2 ranks (a + b == b + a); beyond that the
    reduction order is the MPI library's.

    Returns ``grads``.

    >>> import numpy as np
    >>> from fastnorm.distributed import allreduce_grads_
    >>> g = {"weight": np.ones((2, 2), np.float32), "bias": np.full(2, 3.0)}
    >>> allreduce_grads_([g])[0]["bias"]   # one rank: the mean of one
    array([3., 3.])
    """
    comm = _comm(comm)
    error, arrays = None, []
    try:
        arrays = _grad_arrays(grads)
        for a in arrays:
            if a.dtype not in v.FLOAT_DTYPES:
                raise TypeError(f"gradients must be float32 or float64 arrays, got dtype {a.dtype}")
            if not a.flags.writeable:
                raise ValueError("gradients are averaged in place: got a read-only array")
    except Exception as e:  # noqa: BLE001 - re-raised after the other ranks are told
        error = e
    if check:
        layout = ";".join(f"{a.dtype.str}{a.shape}" for a in arrays).encode()
        table = _agree(comm, "allreduce_grads_", error,
                       (len(arrays), sum(a.size for a in arrays), zlib.crc32(layout)))
        if (table != table[0]).any():
            raise ValueError("allreduce_grads_: the ranks' gradients differ in number, size, dtype "
                             f"or shape: (arrays, elements, layout CRC) per rank {table.tolist()}")
    elif error is not None:
        raise error
    size = comm.Get_size()
    for dt in v.FLOAT_DTYPES:
        group = [a for a in arrays if a.dtype == dt]
        if not group:
            continue
        buf = np.concatenate([a.ravel() for a in group]) if len(group) > 1 else group[0].ravel().copy()
        comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        buf /= dt.type(size)
        start = 0
        for a in group:
            a[...] = buf[start:start + a.size].reshape(a.shape)
            start += a.size
    return grads


#: the name in the API contract (``../shared/API.md``)
allreduce_mean_ = allreduce_grads_
