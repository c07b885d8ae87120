"""kl_div, log_softmax and softmax cross-entropy (forward+backward, and fused), per CPU
backend and size, from the registry in ``fastnorm.bench`` (``fastnorm.bench.divergence``).

Sizes from cache-resident (64x1000 float32, 256 KB) to the issue's headline (32768x1000,
131 MB per array).
"""
import fastnorm
from fastnorm import bench

BACKENDS = [b for b in ("cython", "numba") if bench.backend_available(b)]
SHAPES = [(64, 1000), (4096, 1000), (32768, 1000)]
OPS = ["kl_div", "log_softmax", "softmax_cross_entropy+backward", "softmax_cross_entropy(return_grad)"]


class Divergence:
    params = [BACKENDS, SHAPES, OPS]
    param_names = ["backend", "shape", "op"]
    timeout = 300

    def setup(self, backend, shape, op):
        fastnorm.set_backend(backend)
        spec = bench.ops()[op]
        inputs = bench.Case(spec, shape).inputs()
        self.call = spec.fastnorm(inputs)
        self.call()  # JIT compilation and first-touch page faults, not timed
        self.nbytes = spec.nbytes(inputs)

    def time_op(self, backend, shape, op):
        self.call()

    def track_bandwidth(self, backend, shape, op):
        """Bytes the op must move over its best time per call."""
        return self.nbytes / bench.measure(self.call) / 1e9

    track_bandwidth.unit = "GB/s"
