"""Benchmarks of fastnorm against NumPy, PyTorch and ONNX Runtime: ``python -m fastnorm bench``.

- ``fastnorm.bench.core``: the op registry (``Op``, ``Case``, ``register``, ``ops``, ``cases``),
  the timer (``measure``, ``copy_bandwidth``), the runner, its report and the command line
  (``add_arguments``, ``main``).
- one module per family registering its ops when ``ops()`` imports it: ``norm``, ``batch``,
  ``local``, ``dropout``, ``optim``, ``divergence`` (listed in ``core.OP_MODULES``).

asv_bench/ times the same registry, so the command line and asv measure the same calls.
"""
from .core import (BASELINES, DESCRIPTION, Case, Op, add_arguments, backend_available,
                   baseline_available, cases, copy_bandwidth, main, measure, ops, register, run)

__all__ = ["BASELINES", "DESCRIPTION", "Case", "Op", "add_arguments", "backend_available",
           "baseline_available", "cases", "copy_bandwidth", "main", "measure", "ops", "register",
           "run"]
