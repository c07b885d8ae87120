"""What the forward/backward benchmark classes share (norm, batch, local): the calls, inputs and
byte counts come from the registry in ``fastnorm.bench``, the one ``python -m fastnorm bench``
runs. A factory, not a base class: asv collects every class with ``time_`` methods that a
benchmark module holds, this one included."""
import fastnorm
from fastnorm import bench

BACKENDS = [b for b in ("cython", "numba") if bench.backend_available(b)]


def forward_backward(name, forward, backward, shapes):
    """A benchmark class named ``name`` timing the registry ops ``forward`` and ``backward``
    (time and GB/s of each) per CPU backend and shape in ``shapes``."""

    class ForwardBackward:
        params = [BACKENDS, list(shapes)]
        param_names = ["backend", "shape"]
        timeout = 300

        def setup(self, backend, shape):
            fastnorm.set_backend(backend)
            registry = bench.ops()
            self.calls, self.nbytes = {}, {}
            for op_name in (forward, backward):
                op = registry[op_name]
                inputs = bench.Case(op, shape).inputs()
                self.calls[op_name] = op.fastnorm(inputs)
                self.calls[op_name]()  # JIT compilation and first-touch page faults, not timed
                self.nbytes[op_name] = op.nbytes(inputs)

        def _gbps(self, name):
            return self.nbytes[name] / bench.measure(self.calls[name]) / 1e9

        def time_forward(self, backend, shape):
            self.calls[forward]()

        def time_backward(self, backend, shape):
            self.calls[backward]()

        def track_forward_bandwidth(self, backend, shape):
            """Bytes the forward must move over its best time per call."""
            return self._gbps(forward)

        track_forward_bandwidth.unit = "GB/s"

        def track_backward_bandwidth(self, backend, shape):
            """Bytes the backward must move over its best time per call."""
            return self._gbps(backward)

        track_backward_bandwidth.unit = "GB/s"

    ForwardBackward.__name__ = ForwardBackward.__qualname__ = name
    return ForwardBackward
