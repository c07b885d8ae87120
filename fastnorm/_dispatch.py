"""Backend selection, thread count, and the one place that calls kernels.

The public API (``fastnorm.ops``, ``fastnorm.optim``) asks ``kernels(group)`` for the active CPU
backend's kernels of a group (``"norm"``, ...) and calls them with ``threads_for(work)`` as the
last argument. Both backends expose the same function names and signatures. Arrays on a CUDA
device are recognized by ``on_device`` and routed by ``device_variant`` to the numba.cuda host
module of the op (``fastnorm.cuda``). Which module serves what is written out once, in
``CPU_KERNELS`` and ``DEVICE_MODULES`` below.

Safety when embedded (many Python threads, ``fork``):
- Numba: its default ``workqueue`` threading layer aborts the process when two threads run a
  parallel kernel at once, and the ``omp`` layer (GNU) aborts a forked child. We pin
  ``workqueue`` (fork-safe) unless the user chose a layer, and serialize *parallel* launches
  with a lock; serial launches (small inputs) run concurrently, GIL released.
- Cython/OpenMP: GNU libgomp hangs in a forked child whose parent ran a parallel region. Such a
  child runs the Cython kernels single-threaded (``threads_for``; same results: the arithmetic
  does not depend on the thread count).

Beside other thread pools (PyTorch, ONNX Runtime, other processes): libgomp's default
idle threads spin for ~300000 iterations (several ms, ~0.4 of a core after every call here)
before they sleep, and a parallel region on cores that another pool or process keeps busy
waits for its slowest thread. On a loaded 2-core machine a 2-thread LayerNorm of 1024x1024
then took 4.6 ms (median) with libgomp's default and 0.8 ms passive. So fastnorm loads
libgomp with ``OMP_WAIT_POLICY=passive`` (idle threads sleep at once; a launch then costs a
futex wake-up, hence ``PARALLEL_MIN_WORK``), unless the user set ``OMP_WAIT_POLICY`` or
``GOMP_SPINCOUNT``; the variable is removed again after the load, so runtimes loaded later
read the user's environment. PyTorch's wheel ships its libgomp under the same soname
(libgomp.so.1): the process then has one GNU OpenMP runtime, configured by whichever of the
two loads first (torch first: its settings, spinning included, apply to us too).
"""
import contextlib
import importlib
import os
import sys
import threading

import numpy as np

BACKENDS = ("cython", "numba")
# Below this many elements a call runs single-threaded: a thread-pool launch costs more than
# the second thread saves (waking a passive OpenMP thread costs ~10-50 us; numba's workqueue
# launch ~100-150 us). Medians on this 2-core VM (2026-12-03), 1 thread vs 2:
#   layer_norm 512x1024    cython 162 vs 179 us   numba  189 vs 276 us
#   layer_norm 1024x1024   cython 307 vs 293 us   numba  398 vs 486 us
#   layer_norm 2048x1024   cython 743 vs 559 us   numba 1057 vs 733 us
#   sgd momentum 2^19      cython 127 vs 189 us   numba  140 vs 319 us
#   sgd momentum 2^20      cython 244 vs 247 us   numba  252 vs 391 us
# (2^18 and 2^19 before: medium calls ran up to 1.5x slower on two threads.) Machines with
# cheaper wake-ups (no hypervisor, more cores) gain from lower values: the environment
# variables FASTNORM_PARALLEL_MIN_WORK and FASTNORM_NUMBA_PARALLEL_MIN_WORK, read at import,
# set them (the tests set the old values, to run the parallel paths on smaller arrays).


def _min_work(name, default):
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(f"{name} must be a non-negative integer (elements), got {text!r}")
    return value


PARALLEL_MIN_WORK = _min_work("FASTNORM_PARALLEL_MIN_WORK", 1 << 20)
NUMBA_PARALLEL_MIN_WORK = _min_work("FASTNORM_NUMBA_PARALLEL_MIN_WORK", 1 << 21)

#: kernel group -> backend -> the module holding its loops (kernels/ installs as fastnorm.kernels).
#: Imported on first use: numba's modules JIT-compile, and the cython ones may not be built.
CPU_KERNELS = {
    "norm": {"cython": "fastnorm.kernels.cython.norm", "numba": "fastnorm.kernels.numba.norm"},
    "batch": {"cython": "fastnorm.kernels.cython.batch", "numba": "fastnorm.kernels.numba.batch"},
    "local": {"cython": "fastnorm.kernels.cython.local", "numba": "fastnorm.kernels.numba.local"},
    "dropout": {"cython": "fastnorm.kernels.cython.dropout", "numba": "fastnorm.kernels.numba.dropout"},
    "divergence": {"cython": "fastnorm.kernels.cython.divergence",
                   "numba": "fastnorm.kernels.numba.divergence"},
    "optim": {"cython": "fastnorm.kernels.cython.optim", "numba": "fastnorm.kernels.numba.optim"},
}
#: public module -> the numba.cuda host module whose functions of the same names and arguments
#: serve its ops on device arrays (they launch the kernels in fastnorm.kernels.cuda).
#: Imported on the first device call only (numba.cuda is heavy and optional).
DEVICE_MODULES = {
    "fastnorm.ops.norm": "fastnorm.cuda.norm",
    "fastnorm.ops.batch": "fastnorm.cuda.batch",
    "fastnorm.ops.local": "fastnorm.cuda.local",
    "fastnorm.ops.dropout": "fastnorm.cuda.dropout",
    "fastnorm.ops.divergence": "fastnorm.cuda.divergence",
    "fastnorm.ops.loss": "fastnorm.cuda.divergence",  # softmax and cross-entropy: row kernels
    "fastnorm.ops.regularization": "fastnorm.cuda.dropout",  # penalties, clipping: elementwise
    "fastnorm.random": "fastnorm.cuda.dropout",  # Philox fills of a device out=
    "fastnorm.optim": "fastnorm.cuda.optim",  # the optimizer classes' device state
    "fastnorm.optim.functional": "fastnorm.cuda.optim",
}

_lock = threading.Lock()  # guards numba parallel launches (workqueue is not thread-safe)
_state = {"backend": None, "threads": None, "omp_used": False, "omp_broken": False}
_active = {}  # group -> kernels of the active backend


def _after_fork_in_child():
    global _lock
    _lock = threading.Lock()  # a lock held by another thread at fork time would never be released
    if _state["omp_used"]:
        _state["omp_broken"] = True


os.register_at_fork(after_in_child=_after_fork_in_child)


def _default_threads():
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def _passive_openmp():
    """OMP_WAIT_POLICY=passive while libgomp initializes (it reads its environment once, at
    load), unless the user chose a wait policy or spin count (see the module docstring)."""
    if "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ:
        yield
        return
    os.environ["OMP_WAIT_POLICY"] = "passive"
    try:
        yield
    finally:
        os.environ.pop("OMP_WAIT_POLICY", None)


def _import_cython(group):
    """The cython backend's extension module of ``group`` (loading libgomp passive)."""
    name = CPU_KERNELS[group]["cython"]
    module = sys.modules.get(name)
    if module is None:
        with _passive_openmp():
            module = importlib.import_module(name)
    return module


def _cython_available():
    try:
        _import_cython("norm")
        return True
    except ImportError:
        return False


def set_backend(name):
    """Choose the CPU backend: ``'cython'`` (compiled, no JIT) or ``'numba'``.

    Both give bitwise-identical results. The default is ``$FASTNORM_BACKEND`` when set, else
    ``'cython'`` when its extensions are built, else ``'numba'``.
    """
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    if name == "cython" and not _cython_available():
        raise ImportError("the cython backend's extensions are not built (pip install . builds them)")
    _state["backend"] = name
    _active.clear()


def get_backend():
    """The active CPU backend's name."""
    if _state["backend"] is None:
        env = os.environ.get("FASTNORM_BACKEND")
        if env:
            set_backend(env.strip().lower())
        else:
            _state["backend"] = "cython" if _cython_available() else "numba"
    return _state["backend"]


def set_num_threads(n):
    """Threads used by both CPU backends for large inputs (numba: at most NUMBA_NUM_THREADS)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"num_threads must be a positive int, got {n!r}")
    _state["threads"] = n


def get_num_threads():
    """Threads the CPU backends use for large inputs (default: the CPUs this process may use)."""
    if _state["threads"] is None:
        _state["threads"] = _default_threads()
    return _state["threads"]


def threads_for(work):
    """Thread count for a call touching ``work`` elements: 1 for small ones, and 1 for the
    cython backend in a forked child whose parent ran an OpenMP region (libgomp would hang)."""
    if (_state["backend"] or get_backend()) == "cython":
        if work < PARALLEL_MIN_WORK or _state["omp_broken"]:
            return 1
        _state["omp_used"] = True
    elif work < NUMBA_PARALLEL_MIN_WORK:
        return 1
    return _state["threads"] or get_num_threads()


class _NumbaKernels:
    """A kernel group of the numba backend with the cython module's calling convention:
    ``name(*args, nthreads)`` runs the compiled ``name_serial`` loop, or ``name_parallel``
    with ``nthreads`` threads under the launch lock."""

    def __init__(self, module):
        self._module = module

    def __getattr__(self, name):
        if name.endswith("_small"):
            # small-input entries exist in the cython backend only (a compiled allocation path
            # for per-call latency); numba calls take the general path
            setattr(self, name, None)
            return None
        serial = getattr(self._module, name + "_serial")
        parallel = getattr(self._module, name + "_parallel")

        def call(*args):
            nthreads = args[-1]
            if nthreads <= 1:
                return serial(*args[:-1])
            import numba

            with _lock:
                numba.set_num_threads(min(nthreads, numba.config.NUMBA_NUM_THREADS))
                return parallel(*args[:-1])

        call.__name__ = name
        setattr(self, name, call)
        return call


def _configure_numba():
    import numba

    if "NUMBA_THREADING_LAYER" not in os.environ:
        numba.config.THREADING_LAYER = "workqueue"


def kernels(group):
    """The active CPU backend's kernels of ``group`` (e.g. ``kernels("norm").norm_forward``).

    Both backends take the same arguments, the thread count (``threads_for``) last."""
    k = _active.get(group)
    if k is None:
        k = _active[group] = _load(group, get_backend())
    return k


def _load(group, backend):
    if backend == "numba":
        _configure_numba()
        return _NumbaKernels(importlib.import_module(CPU_KERNELS[group]["numba"]))
    return _import_cython(group)


_ndarray = np.ndarray
_DEVICE_TYPES = {"DeviceNDArray", "MappedNDArray", "ManagedNDArray", "FakeCUDAArray"}


def on_device(a):
    """True for CUDA device arrays: anything with ``__cuda_array_interface__`` (CuPy, numba),
    or a numba device array by type (the CUDA simulator's arrays have no such interface)."""
    t = type(a)
    if t.__module__.startswith("numpy"):
        return False
    return hasattr(a, "__cuda_array_interface__") or (
        t.__name__ in _DEVICE_TYPES and t.__module__.startswith("numba")
    )


def device_module(module):
    """The numba.cuda host module serving public ``module`` (see ``DEVICE_MODULES``)."""
    return importlib.import_module(DEVICE_MODULES[module])


def device_function(module, name):
    """The numba.cuda implementation of ``module``'s op ``name`` (see ``DEVICE_MODULES``)."""
    return getattr(device_module(module), name)


def holds_device(a):
    """True when ``a`` is a device array, or a list, tuple or dict holding one at its top level
    (the array lists of the penalties, clipping and optimizers)."""
    if type(a) is _ndarray:
        return False
    if isinstance(a, dict):
        return any(on_device(e) for e in a.values())
    if isinstance(a, (list, tuple)):
        return any(on_device(e) for e in a)
    return on_device(a)


def device_variant(fn=None, *, also=None):
    """Route calls whose first array argument lives on a CUDA device (or is a list, tuple or
    dict holding device arrays) to the numba.cuda implementation of the same name in
    ``DEVICE_MODULES[fn.__module__]``, which takes the same arguments and returns device arrays.
    ``also``: route on the arguments up to this position as well (a backward whose first
    argument may be a plain number)."""
    if fn is None:
        return lambda f: device_variant(f, also=also)
    name = fn.__name__
    module = fn.__module__
    if module not in DEVICE_MODULES:
        raise LookupError(f"{module} has no entry in fastnorm._dispatch.DEVICE_MODULES")

    def device(*args, **kwargs):
        return device_function(module, name)(*args, **kwargs)

    def wrapper(x, *args, **kwargs):
        if type(x) is _ndarray or not holds_device(x):
            return fn(x, *args, **kwargs)
        return device(x, *args, **kwargs)

    def wrapper_also(*args, **kwargs):
        if any(type(a) is not _ndarray and holds_device(a) for a in args[:also + 1]):
            return device(*args, **kwargs)
        return fn(*args, **kwargs)

    routed = _wraps(wrapper if also is None else wrapper_also, fn)
    routed.device_module = DEVICE_MODULES[module]
    return routed


def no_device_kernel(op, why="pass host (NumPy) arrays"):
    """The error of an op that has no CUDA kernel, raised before anything is read or written."""
    return NotImplementedError(f"fastnorm.{op}: no CUDA kernel yet; {why}")


def host_only(public):
    """For ops without a CUDA kernel: a device array among the arguments (or in a list, tuple
    or dict among them) raises ``no_device_kernel`` naming ``public.<name>`` (e.g.
    ``functional.wasserstein_1d``) instead of a silent copy to the host."""

    def decorate(fn):
        op = f"{public}.{fn.__name__}"

        def wrapper(*args, **kwargs):
            for a in (*args, *kwargs.values()):
                if type(a) is not _ndarray and holds_device(a):
                    raise no_device_kernel(op)
            return fn(*args, **kwargs)

        return _wraps(wrapper, fn)

    return decorate


def _wraps(wrapper, fn):
    wrapper.__name__ = fn.__name__
    wrapper.__qualname__ = fn.__qualname__
    wrapper.__doc__ = fn.__doc__
    wrapper.__module__ = fn.__module__
    wrapper.__wrapped__ = fn
    return wrapper
