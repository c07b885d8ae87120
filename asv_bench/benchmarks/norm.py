"""layer_norm and rms_norm, forward and backward, per CPU backend and size.

Inputs, the fastnorm call (preallocated ``out=``) and the bytes each call must move come from
the registry in ``fastnorm.bench``, the one ``python -m fastnorm bench`` runs. Sizes go from
cache-resident (64x1024 float32, 256 KB) to far beyond it (65536x1024, 256 MB).
"""
import fastnorm
from fastnorm import bench

BACKENDS = [b for b in ("cython", "numba") if bench.backend_available(b)]
SHAPES = [(64, 1024), (4096, 1024), (65536, 1024)]


class _RowNorm:
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


class LayerNorm(_RowNorm):
    forward, backward = "layer_norm", "layer_norm_backward"


class RMSNorm(_RowNorm):
    forward, backward = "rms_norm", "rms_norm_backward"
