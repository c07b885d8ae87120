"""local_response_norm, lp_normalize, weight_norm and cosine_linear, forward and backward, per
CPU backend and size (inputs, calls and byte counts from the registry in fastnorm.bench, the
one ``python -m fastnorm bench`` runs)."""
import fastnorm
from fastnorm import bench

BACKENDS = [b for b in ("cython", "numba") if bench.backend_available(b)]


class _Local:
    """Benchmarks of the registry ops ``forward`` and ``backward`` (set by subclasses)."""

    params = [BACKENDS, []]
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


class LocalResponseNorm(_Local):
    # cache-resident, the headline (25.7 MB), and a 103 MB batch
    params = [BACKENDS, [(4, 64, 16, 16), (32, 64, 56, 56), (128, 64, 56, 56)]]
    forward, backward = "local_response_norm", "local_response_norm_backward"


class LpNormalize(_Local):
    params = [BACKENDS, [(64, 1024), (4096, 1024), (65536, 1024)]]
    forward, backward = "lp_normalize", "lp_normalize_backward"


class WeightNorm(_Local):
    params = [BACKENDS, [(64, 1024), (4096, 1024), (65536, 1024)]]
    forward, backward = "weight_norm", "weight_norm_backward"


class CosineLinear(_Local):
    params = [BACKENDS, [(64, 256), (512, 1024), (4096, 1024)]]
    forward, backward = "cosine_linear", "cosine_linear_backward"
