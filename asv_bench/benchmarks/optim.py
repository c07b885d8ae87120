"""Optimizer steps (fastnorm.optim.Adam, SGD with momentum) per CPU backend and model shape.

Inputs, the step and the bytes it must move come from the registry in ``fastnorm.bench``
(``fastnorm.bench.optim``). Shapes are (tensors, elements per tensor), float32: one tensor of
1M (4 MB per array), one of 32M (896 MB moved per Adam
step) and 256 tensors of 128k (the many-tensor case: one launch must still use every thread).
Each sample is one step of the same optimizer; a step's cost does not depend on the values.
"""
import fastnorm
from fastnorm import bench

BACKENDS = [b for b in ("cython", "numba") if bench.backend_available(b)]
SHAPES = [(1, 1 << 20), (1, 32 << 20), (256, 128 << 10)]


class _Step:
    params = [BACKENDS, SHAPES]
    param_names = ["backend", "shape"]
    timeout = 600
    op = None

    def setup(self, backend, shape):
        fastnorm.set_backend(backend)
        op = bench.ops()[self.op]
        inputs = bench.Case(op, shape).inputs()
        self.call = op.fastnorm(inputs)
        self.call()  # JIT compilation, state allocation and first-touch page faults, not timed
        self.nbytes = op.nbytes(inputs)

    def time_step(self, backend, shape):
        self.call()

    def track_step_bandwidth(self, backend, shape):
        """Bytes one step must move over its best time."""
        return self.nbytes / bench.measure(self.call) / 1e9

    track_step_bandwidth.unit = "GB/s"


class Adam(_Step):
    op = "adam_step"


class SGDMomentum(_Step):
    op = "sgd_momentum_step"
