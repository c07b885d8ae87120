"""Batch-statistics layers: BatchNorm1d/2d/3d, InstanceNorm1d/2d/3d, GroupNorm (torch.nn's)."""
import numpy as np

from ..ops import batch as F
from .._dispatch import on_device
from ._module import Module

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "InstanceNorm1d", "InstanceNorm2d",
           "InstanceNorm3d", "GroupNorm"]


def _batched(a):
    """a as a batch of one (a view)."""
    return a.reshape((1,) + tuple(a.shape)) if on_device(a) else a[None]


class _NormBase(Module):
    """Params weight (ones) / bias (zeros) when ``affine``; buffers running_mean (zeros),
    running_var (ones) and num_batches_tracked (int64 0-d) when ``track_running_stats``:
    torch's _NormBase, same state_dict keys."""

    _dims = ()  # accepted input dimensions

    def __init__(self, num_features, eps, momentum, affine, track_running_stats, dtype):
        super().__init__(dtype)
        self.num_features = int(num_features)
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        C = self.num_features
        if affine:
            self.params["weight"] = np.ones(C, self.dtype)
            self.params["bias"] = np.zeros(C, self.dtype)
        if track_running_stats:
            self.buffers["running_mean"] = np.zeros(C, self.dtype)
            self.buffers["running_var"] = np.ones(C, self.dtype)
            self.buffers["num_batches_tracked"] = np.zeros((), np.int64)

    def reset_running_stats(self):
        if self.track_running_stats:
            self.buffers["running_mean"][...] = 0
            self.buffers["running_var"][...] = 1
            self.buffers["num_batches_tracked"][...] = 0

    def _check_dims(self, x):
        x = self._check_input(x)
        if len(x.shape) not in self._dims:
            want = " or ".join(f"{d}D" for d in self._dims)
            raise ValueError(f"{type(self).__name__}: expected {want} input (got {len(x.shape)}D input)")
        return x

    def _running(self):
        return self.buffers.get("running_mean"), self.buffers.get("running_var")

    def _affine(self):
        return self.params.get("weight"), self.params.get("bias")

    def _set_grads(self, dw, db):
        self.grads = {"weight": dw, "bias": db} if self.affine else {}


class _BatchNorm(_NormBase):
    """``torch.nn.BatchNorm*d``: batch statistics in training (running statistics updated in
    place with ``momentum``; ``momentum=None``: cumulative average over num_batches_tracked),
    running statistics in eval when ``track_running_stats``, batch statistics otherwise.
    ``axis`` (keyword, default 1) is the channel axis: ``axis=-1`` for channels-last data.
    See ``fastnorm.functional.batch_norm`` (and its note on Keras'/ONNX's momentum, which
    weighs the old value: ours = 1 - theirs)."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, dtype=np.float32, *, axis=1):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, dtype)
        self.axis = axis

    def forward(self, x):
        x = self._check_dims(x)
        if x.shape[self.axis] != self.num_features:
            raise ValueError(f"{type(self).__name__}({self.num_features}): input of shape {x.shape} "
                             f"has {x.shape[self.axis]} channels on axis {self.axis}")
        momentum, nbt = self.momentum, None
        if self.training and self.track_running_stats:
            if not on_device(x):
                F._check_x(x)
            nbt = self.buffers["num_batches_tracked"]
            if x.size and x.size // x.shape[self.axis] == 1:
                raise ValueError(f"Expected more than 1 value per channel when training, got input size {x.shape}")
            nbt += 1
        batch_stats = self.training or not self.track_running_stats
        rm, rv = self._running() if (not self.training or self.track_running_stats) else (None, None)
        w, b = self._affine()
        y, mean, invstd = F.batch_norm(x, rm, rv, w, b, training=batch_stats, momentum=momentum,
                                       eps=self.eps, axis=self.axis, return_stats=True,
                                       num_batches_tracked=nbt)
        self._cache = (x, batch_stats, (mean, invstd)) if self.training else None
        return y

    def backward(self, dy):
        x, batch_stats, stats = self._cached()
        w, b = self._affine()
        dx, dw, db = F.batch_norm_backward(dy, x, None, None, w, b, training=batch_stats,
                                           eps=self.eps, axis=self.axis, stats=stats)
        self._set_grads(dw, db)
        return dx


class BatchNorm1d(_BatchNorm):
    """``torch.nn.BatchNorm1d``: input (N, C) or (N, C, L).

    >>> import numpy as np; from fastnorm import nn
    >>> bn = nn.BatchNorm1d(2)
    >>> y = bn(np.array([[1.0, 2.0], [3.0, 6.0]], np.float32))
    >>> bn.buffers["running_mean"]
    array([0.2, 0.4], dtype=float32)
    """

    _dims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """``torch.nn.BatchNorm2d``: input (N, C, H, W) (or (N, H, W, C) with ``axis=-1``)."""

    _dims = (4,)


class BatchNorm3d(_BatchNorm):
    """``torch.nn.BatchNorm3d``: input (N, C, D, H, W) (or channels-last with ``axis=-1``)."""

    _dims = (5,)


class _InstanceNorm(_NormBase):
    """``torch.nn.InstanceNorm*d``: instance statistics in training and whenever
    ``track_running_stats`` is False; running statistics (updated in training) in eval when
    it is True. Defaults affine=False, track_running_stats=False as in torch; momentum=None
    counts as 0 (torch's choice: instance norm has no cumulative average). Unbatched input
    (one dimension fewer) is normalized as a batch of one."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=False,
                 track_running_stats=False, dtype=np.float32):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, dtype)

    def forward(self, x):
        x = self._check_dims(x)
        unbatched = len(x.shape) == self._dims[0]
        xb = _batched(x) if unbatched else x
        if xb.shape[1] != self.num_features and self.affine:
            raise ValueError(f"{type(self).__name__}({self.num_features}): input of shape {x.shape} "
                             f"has {xb.shape[1]} channels")
        use_input = self.training or not self.track_running_stats
        rm, rv = self._running() if self.track_running_stats else (None, None)
        w, b = self._affine()
        momentum = 0.0 if self.momentum is None else self.momentum
        y, mean, invstd = F.instance_norm(xb, w, b, rm, rv, training=use_input, momentum=momentum,
                                          eps=self.eps, return_stats=True)
        # (in training the statistics are always the instances')
        self._cache = (xb, unbatched, (mean, invstd)) if self.training else None
        return y[0] if unbatched else y

    def backward(self, dy):
        xb, unbatched, stats = self._cached()
        w, b = self._affine()
        dy = dy if on_device(dy) else np.asarray(dy)
        dx, dw, db = F.instance_norm_backward(_batched(dy) if unbatched else dy, xb, w, b,
                                              training=True, eps=self.eps, stats=stats)
        self._set_grads(dw, db)
        return dx[0] if unbatched else dx


class InstanceNorm1d(_InstanceNorm):
    """``torch.nn.InstanceNorm1d``: input (N, C, L) or unbatched (C, L)."""

    _dims = (2, 3)


class InstanceNorm2d(_InstanceNorm):
    """``torch.nn.InstanceNorm2d``: input (N, C, H, W) or unbatched (C, H, W)."""

    _dims = (3, 4)


class InstanceNorm3d(_InstanceNorm):
    """``torch.nn.InstanceNorm3d``: input (N, C, D, H, W) or unbatched (C, D, H, W)."""

    _dims = (4, 5)


class GroupNorm(Module):
    """``torch.nn.GroupNorm(num_groups, num_channels, eps, affine)``: input (N, C, *); params
    weight (ones) and bias (zeros) of shape (C,) when ``affine``. See
    ``fastnorm.functional.group_norm``.

    >>> import numpy as np; from fastnorm import nn
    >>> gn = nn.GroupNorm(2, 4)
    >>> y = gn(np.arange(8, dtype=np.float32).reshape(1, 4, 2))
    >>> dx = gn.backward(np.ones_like(y)); sorted(gn.grads)
    ['bias', 'weight']
    """

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True, dtype=np.float32):
        super().__init__(dtype)
        if num_channels % num_groups:
            raise ValueError("num_channels must be divisible by num_groups")
        self.num_groups, self.num_channels = int(num_groups), int(num_channels)
        self.eps, self.affine = eps, affine
        if affine:
            self.params["weight"] = np.ones(num_channels, self.dtype)
            self.params["bias"] = np.zeros(num_channels, self.dtype)

    def forward(self, x):
        x = self._check_input(x)
        if len(x.shape) < 2 or x.shape[1] != self.num_channels:
            raise ValueError(f"GroupNorm({self.num_groups}, {self.num_channels}) expects input of "
                             f"shape (N, {self.num_channels}, *), got {x.shape}")
        y, mean, invstd = F.group_norm(x, self.num_groups, self.params.get("weight"),
                                       self.params.get("bias"), eps=self.eps, return_stats=True)
        self._cache = (x, (mean, invstd)) if self.training else None
        return y

    def backward(self, dy):
        x, stats = self._cached()
        dx, dw, db = F.group_norm_backward(dy, x, self.num_groups, self.params.get("weight"),
                                           self.params.get("bias"), eps=self.eps, stats=stats)
        self.grads = {"weight": dw, "bias": db} if self.affine else {}
        return dx
