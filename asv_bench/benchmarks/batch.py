"""batch_norm (training, eval, channels-last), instance_norm, group_norm: forward and backward,
per CPU backend and size.

Inputs, the fastnorm call (preallocated ``out=``) and the bytes each call must move come from
the registry in ``fastnorm.bench`` (``fastnorm/_bench_batch.py``), the one ``python -m fastnorm
bench`` runs. Sizes go from cache-resident (8x64x8x8 float32, 128 KB) to the issue's headline
(64x64x56x56, 51 MB).
"""
import fastnorm
from fastnorm import bench

BACKENDS = [b for b in ("cython", "numba") if bench.backend_available(b)]
SHAPES = [(8, 64, 8, 8), (8, 64, 28, 28), (64, 64, 56, 56)]


class _BatchNorm:
    """Benchmarks of the registry ops ``forward`` and ``backward`` (set by subclasses)."""

    params = [BACKENDS, SHAPES]
    param_names = ["backend", "shape"]
    timeout = 300
    forward = backward = None

    def setup(self, backend, shape):
        fastnorm.set_backend(backend)
        registry = bench.ops()
        self.calls, self.nbytes = {}, {}
        for name in (self.forward, self.backward):
            op = registry[name]
            inputs = bench.Case(op, shape).inputs()
            self.calls[name] = op.fastnorm(inputs)
            self.calls[name]()  # JIT compilation and first-touch page faults, not timed
            self.nbytes[name] = op.nbytes(inputs)

    def _gbps(self, name):
        return self.nbytes[name] / bench.measure(self.calls[name]) / 1e9

    def time_forward(self, backend, shape):
        self.calls[self.forward]()

    def time_backward(self, backend, shape):
        self.calls[self.backward]()

    def track_forward_bandwidth(self, backend, shape):
        """Bytes the forward must move over its best time per call."""
        return self._gbps(self.forward)

    track_forward_bandwidth.unit = "GB/s"

    def track_backward_bandwidth(self, backend, shape):
        """Bytes the backward must move over its best time per call."""
        return self._gbps(self.backward)

    track_backward_bandwidth.unit = "GB/s"


class BatchNormTrain(_BatchNorm):
    forward, backward = "batch_norm", "batch_norm_backward"


class BatchNormEval(_BatchNorm):
    forward, backward = "batch_norm_eval", "batch_norm_backward"


class BatchNormChannelsLast(_BatchNorm):
    forward, backward = "batch_norm_channels_last", "batch_norm_channels_last_backward"


class InstanceNorm(_BatchNorm):
    forward, backward = "instance_norm", "instance_norm_backward"


class GroupNorm(_BatchNorm):
    forward, backward = "group_norm", "group_norm_backward"
