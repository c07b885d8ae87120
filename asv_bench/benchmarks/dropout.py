"""dropout and dropout_backward per CPU backend and size, and the copy they are judged against.

Inputs, the fastnorm call (preallocated ``out=``) and the bytes each call must move come from
the registry in ``fastnorm.bench`` (ops registered by ``fastnorm.bench.dropout``), the one
``python -m fastnorm bench`` runs. Sizes from cache-resident (64x1024 float32, 256 KB) to the
issue's 16384x1024 (64 MB in, 64 MB out).
"""
import fastnorm
from fastnorm import bench

BACKENDS = [b for b in ("cython", "numba") if bench.backend_available(b)]
SHAPES = [(64, 1024), (4096, 1024), (16384, 1024)]


class Dropout:
    params = [BACKENDS, SHAPES]
    param_names = ["backend", "shape"]
    timeout = 300
    names = ("dropout", "dropout_backward", "gaussian_dropout")

    def setup(self, backend, shape):
        fastnorm.set_backend(backend)
        registry = bench.ops()
        self.calls, self.nbytes = {}, {}
        for name in self.names:
            op = registry[name]
            inputs = bench.Case(op, shape).inputs()
            self.calls[name] = op.fastnorm(inputs)
            self.calls[name]()  # JIT compilation and first-touch page faults, not timed
            self.nbytes[name] = op.nbytes(inputs)

    def _gbps(self, name):
        return self.nbytes[name] / bench.measure(self.calls[name]) / 1e9

    def time_forward(self, backend, shape):
        self.calls["dropout"]()

    def time_backward(self, backend, shape):
        self.calls["dropout_backward"]()

    def time_gaussian(self, backend, shape):
        self.calls["gaussian_dropout"]()

    def track_forward_bandwidth(self, backend, shape):
        """Bytes the forward must move (x in, y out) over its best time per call."""
        return self._gbps("dropout")

    track_forward_bandwidth.unit = "GB/s"

    def track_backward_bandwidth(self, backend, shape):
        """Bytes the backward must move (dy in, dx out: no mask) over its best time per call."""
        return self._gbps("dropout_backward")

    track_backward_bandwidth.unit = "GB/s"

    def track_forward_fraction_of_copy(self, backend, shape):
        """The forward's bandwidth as a fraction of this machine's copy bandwidth (the issue's
        target: at least 0.7 at 16384x1024)."""
        copy = max(bench.copy_bandwidth(self.nbytes["dropout"] // 2, fastnorm.get_num_threads()).values())
        return self._gbps("dropout") / copy

    track_forward_fraction_of_copy.unit = "fraction"
