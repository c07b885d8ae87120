"""Benchmarks: ``python -m fastnorm bench`` and the op registry that asv_bench reuses.

Registry
--------
An ``Op`` says how to benchmark one fastnorm function: how to build its inputs for a shape
and dtype, the fastnorm call (with preallocated ``out=``), the bytes a call must move (the
floor for a memory-bound kernel, hence the GB/s column), and its comparison implementations,
the *baselines*: NumPy always, PyTorch and ONNX Runtime where they have the op. A ``Case`` is
an op at one shape and dtype. ``register(Op(...))`` adds an op; each family's module of this
package registers its ops when imported (``fastnorm.bench.norm``: layer_norm and rms_norm, ...),
is listed in ``OP_MODULES``, and ``ops()`` imports them all. Baselines' libraries are imported
only when a case uses them, so the registry works with NumPy alone.

The runner (``run``) first measures the machine's copy bandwidth once it has warmed up, then
times every case with each requested fastnorm backend, each installed baseline and a copy of
128 MB, their samples interleaved (``measure_interleaved``: warm-up, then rounds of one
timeit-style sample of each; the table gives their minimum, median and spread; "% copy" and
"vs X" compare calls timed in the same rounds), then the cold start of a fresh interpreter,
then the copy bandwidth again: a run during which it moved by more than
``COPY_DRIFT_LIMIT`` is flagged (the machine's load changed). It prints a table (``format_table``) and optionally a bar chart (``plot``).
"""
import contextlib
import gc
import importlib
import importlib.util
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Mapping

import numpy as np

import fastnorm
from .. import _dispatch

# ---------------------------------------------------------------- the registry

#: baseline name -> the modules it needs; a baseline runs only when all are importable
BASELINES = {"numpy": ("numpy",), "torch": ("torch",), "onnxruntime": ("onnxruntime", "onnx")}
#: modules that register ops of their own when imported (see the module docstring)
OP_MODULES = ("fastnorm.bench.norm", "fastnorm.bench.batch", "fastnorm.bench.local", "fastnorm.bench.dropout",
              "fastnorm.bench.optim", "fastnorm.bench.divergence")

F32 = np.dtype(np.float32)
#: default shapes of a row op: per-call latency, cache-resident, larger than cache, headline
ROW_SHAPES = ((1, 768), (512, 1024), (8192, 1024), (32768, 1024))
ROW_SHAPES_QUICK = ((1, 768), (64, 1024))

Inputs = dict  # name -> array (or tuple of arrays, or a scalar), built by Op.make_inputs
Call = Callable[[], Any]


@dataclass(frozen=True)
class Op:
    """How to benchmark one fastnorm function.

    make_inputs(shape, dtype, rng) -> Inputs
        Everything a call needs, built once per case (outside the timed region).
    fastnorm(inputs) -> Call
        A zero-argument callable running the fastnorm function on ``inputs`` with the active
        backend, writing into a preallocated ``out=`` where the API has one.
    nbytes(inputs) -> int
        Bytes one call must read and write at the least.
    baselines : {name: prepare}
        ``prepare(inputs, threads) -> Call`` for names in ``BASELINES``; it imports its
        library, sets it to ``threads`` threads and builds whatever the timed call reuses
        (tensors, sessions). Each callable returns the same outputs as the fastnorm call, in
        the same order (tests compare them), as arrays or tensors.
    shapes, quick_shapes, dtypes : the cases ``cases()`` makes of this op.
    """

    name: str
    make_inputs: Callable[[tuple, np.dtype, np.random.Generator], Inputs]
    fastnorm: Callable[[Inputs], Call]
    nbytes: Callable[[Inputs], int]
    baselines: Mapping[str, Callable[[Inputs, int], Call]]
    shapes: tuple = ROW_SHAPES
    quick_shapes: tuple = ROW_SHAPES_QUICK
    dtypes: tuple = (F32,)


@dataclass(frozen=True)
class Case:
    """One op at one shape and dtype."""

    op: Op
    shape: tuple
    dtype: np.dtype = F32

    def inputs(self, seed=0):
        """The op's inputs for this case, from a fixed seed."""
        return self.op.make_inputs(self.shape, np.dtype(self.dtype), np.random.default_rng(seed))

    def __str__(self):
        return f"{self.op.name} {format_shape(self.shape)} {np.dtype(self.dtype).name}"


_REGISTRY = {}


def register(op):
    """Add ``op`` to the registry (its name must be new, it must have a NumPy baseline);
    returns it."""
    if op.name in _REGISTRY:
        raise ValueError(f"a benchmark op named {op.name!r} is already registered")
    unknown = set(op.baselines) - set(BASELINES)
    if unknown:
        raise ValueError(f"{op.name}: unknown baselines {sorted(unknown)}; known: {list(BASELINES)}")
    if "numpy" not in op.baselines:
        raise ValueError(f"{op.name}: every op needs a numpy baseline")
    _REGISTRY[op.name] = op
    return op


def ops():
    """All registered ops by name, in registration order (imports ``OP_MODULES`` first)."""
    for module in OP_MODULES:
        importlib.import_module(module)
    return dict(_REGISTRY)


def default_shapes(op):
    """The shapes a plain ``bench`` run times: the op's headline shape (its last, the one its
    speed target names) and, when its first shape is a single row, that per-call-latency case.
    ``--all-shapes`` times every shape in ``op.shapes``."""
    first, last = op.shapes[0], op.shapes[-1]
    return (first, last) if first[0] == 1 and first != last else (last,)


def cases(names=None, quick=False, all_shapes=True):
    """The cases of the ops named in ``names`` (all when None): each op's shapes x dtypes
    (``quick``: its quick shapes; ``all_shapes=False``: its ``default_shapes``)."""
    registry = ops()
    names = list(registry) if names is None else list(names)
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise ValueError(f"unknown ops {unknown}; registered: {', '.join(registry)}")
    out = []
    for name in names:
        op = registry[name]
        shapes = op.quick_shapes if quick else op.shapes if all_shapes else default_shapes(op)
        for shape in shapes:
            out.extend(Case(op, shape, dt) for dt in op.dtypes)
    return out


def baseline_available(name):
    """True when every module baseline ``name`` needs can be imported."""
    return all(importlib.util.find_spec(m) is not None for m in BASELINES[name])


def backend_available(name):
    """True when fastnorm's CPU backend ``name`` can run here."""
    if name == "cython":
        return _dispatch._cython_available()
    return importlib.util.find_spec("numba") is not None


# ---------------------------------------------------------------- timing


def _clock(call, number):
    t0 = time.perf_counter()
    for _ in range(number):
        call()
    return time.perf_counter() - t0


def measure(call, budget=0.25, min_repeat=3, min_sample=5e-3):
    """Seconds per call of ``call()``: the minimum of ``measure_samples``."""
    return min(measure_samples(call, budget, min_repeat, min_sample))


def measure_samples(call, budget=0.25, min_repeat=3, min_sample=5e-3):
    """Seconds per call of ``call()`` in each of several timeit-style samples.

    One untimed warm-up call (JIT compilation, first-touch page faults, caches); then each
    sample runs ``call`` ``number`` times, ``number`` grown until a sample lasts at least
    ``min_sample`` seconds (so a microsecond call is timed over thousands of calls and a
    100 ms call alone); samples go on until ``budget`` seconds have passed since the start, and
    there are at least ``min_repeat`` of them. The garbage collector is off meanwhile, as in
    ``timeit``.
    """
    with _gc_off():
        deadline = time.perf_counter() + budget
        number, first = _calibrate(call, min_sample)
        samples = [first]
        while len(samples) < min_repeat or time.perf_counter() < deadline:
            samples.append(_clock(call, number) / number)
        return samples


@contextlib.contextmanager
def _gc_off():
    """The garbage collector off meanwhile, as in ``timeit``."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _calibrate(call, min_sample):
    """One untimed warm-up call, then ``number`` (calls per sample) grown until a sample lasts
    at least ``min_sample`` seconds: returns ``(number, that sample's seconds per call)``."""
    call()
    number = 1
    sample = _clock(call, number)
    while sample < min_sample:
        number *= max(2, math.ceil(1.5 * min_sample / max(sample, 1e-7)))
        sample = _clock(call, number)
    return number, sample / number


def measure_interleaved(entries, budget=0.25, min_repeat=3, min_sample=5e-3, rounds=3):
    """``measure_samples`` of several calls side by side: ``entries`` maps a name to
    ``(call, before)``; ``before()`` (or None) runs untimed ahead of each of the call's
    blocks of samples (e.g. selecting a backend). Each call is warmed up and its ``number``
    calibrated as in ``measure_samples``; then ``rounds`` rounds visit every call in turn,
    each visit one untimed call (the caches, thread pools and neighbours' spinning threads
    that the previous call left) and then samples for ``budget / rounds`` seconds (at least
    ``min_repeat / rounds`` of them). Returns ``{name: [seconds per call, ...]}``.
    Alternating blocks is what makes the ratios between calls hold on a host whose bandwidth
    moves by tens of percent within a minute: each call is sampled across the whole span,
    where one block after another gave each its own moment (torch's weight_norm 0.57x ours in
    one run, 5.96x in the next); single samples interleaved instead let each call pay for the
    one before it (ONNX Runtime's spinning threads, the baselines' temporaries)."""
    with _gc_off():
        numbers, samples = {}, {}
        for name, (call, before) in entries.items():
            if before is not None:
                before()
            numbers[name], first = _calibrate(call, min_sample)
            samples[name] = [first]
        per_visit = max(1, math.ceil(min_repeat / rounds))
        for _ in range(rounds):
            for name, (call, before) in entries.items():
                if before is not None:
                    before()
                call()
                deadline = time.perf_counter() + budget / rounds
                taken = 0
                while taken < per_visit or time.perf_counter() < deadline:
                    samples[name].append(_clock(call, numbers[name]) / numbers[name])
                    taken += 1
        return samples


def _numba_copy(threads):
    """``copy(dst, src)``: numba's parallel array assignment on ``threads`` threads."""
    import numba

    _dispatch._configure_numba()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    return numba.njit(parallel=True, cache=True)(_assign)


def _assign(dst, src):
    dst[:] = src


def warm_copy_bandwidth(nbytes, threads, budget=0.5, min_seconds=6.0, max_seconds=12.0,
                        settle=0.05):
    """``copy_bandwidth`` once the machine has warmed up: measured again and again for at
    least ``min_seconds``, then until two measurements in a row agree within ``settle`` (or
    ``max_seconds`` have passed); the last one is returned. On this 2-core VM a 2-thread copy
    read ~42 GB/s for the first ~4 s of load and ~55 GB/s after (the host raising the cores'
    clocks, presumably), so a single cold measurement made every op's "% copy" look better
    than it was, and the end-of-run check flagged a drift of +25-66% on every run."""
    start = time.perf_counter()
    last = copy_bandwidth(nbytes, threads, budget)
    while True:
        now = copy_bandwidth(nbytes, threads, budget)
        elapsed = time.perf_counter() - start
        if elapsed >= max_seconds or (
                elapsed >= min_seconds and abs(max(now.values()) / max(last.values()) - 1.0) <= settle):
            return now
        last = now


def copy_calls(nbytes, threads):
    """``{method: call}``: ``np.copyto`` (one thread) and, when numba is installed and
    ``threads > 1``, a numba parallel copy on ``threads`` threads, of float32 arrays of
    ``nbytes`` each."""
    src = np.ones(nbytes // 4, F32)
    dst = np.zeros_like(src)
    methods = {"np.copyto": partial(np.copyto, dst, src)}
    if threads > 1 and importlib.util.find_spec("numba") is not None:
        methods[f"numba x{threads}"] = partial(_numba_copy(threads), dst, src)
    return methods


def copy_bandwidth(nbytes, threads, budget=0.5):
    """Copy bandwidth in GB/s (read + write bytes) of float32 arrays of ``nbytes`` each.

    Returns ``{method: GB/s}`` for the ``copy_calls``; the best of them is the machine's copy
    bandwidth, the yardstick of the "% copy" column.
    """
    return {name: 2 * nbytes / measure(call, budget) / 1e9
            for name, call in copy_calls(nbytes, threads).items()}


# ---------------------------------------------------------------- baselines
# Helpers of every family's registry module (fastnorm.bench.norm, .batch, ...).

def _nbytes(*names):
    """nbytes(inputs): the summed size of the named inputs; a name may repeat (an output the
    size of that input) and a tuple input counts all its arrays."""

    def nbytes(inp):
        return sum(sum(a.nbytes for a in inp[k]) if isinstance(inp[k], tuple) else inp[k].nbytes
                   for k in names)

    return nbytes


def _torch(threads):
    import torch

    torch.set_num_threads(threads)
    return torch


def onnx_model(op_type, opset, inputs, **attributes):
    """Serialized ONNX model of one node ``op_type`` from the default domain at ``opset``.

    ``inputs`` maps input names to example arrays; the first input's leading dimension is
    symbolic, and the single output ``Y`` has the first input's type and shape."""
    import onnx
    from onnx import helper

    def info(name, a, leading=None):
        dims = list(a.shape) if leading is None else [leading, *a.shape[1:]]
        return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(a.dtype), dims)

    names = list(inputs)
    first = inputs[names[0]]
    node = helper.make_node(op_type, names, ["Y"], **attributes)
    graph = helper.make_graph(
        [node], op_type,
        [info(names[0], first, "rows")] + [info(k, inputs[k]) for k in names[1:]],
        [info("Y", first, "rows")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return model.SerializeToString()


def onnx_session(model, threads):
    """An ONNX Runtime CPU session of ``model`` (bytes or path) on ``threads`` intra-op threads."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


# ---------------------------------------------------------------- cold start

COLD_START_OP = "cold_start(layer_norm)"
COLD_START_SHAPE = (1, 768)
_COLD_X = "np.ones((1, 768), np.float32)"
#: implementation -> program a fresh interpreter runs: import, then one layer_norm of (1, 768)
COLD_START = {
    "fastnorm": f"import fastnorm, numpy as np\nfastnorm.functional.layer_norm({_COLD_X})",
    "numpy": f"import numpy as np\nx = {_COLD_X}\nxc = x - x.mean(-1, keepdims=True)\n"
             "y = xc / np.sqrt((xc * xc).mean(-1, keepdims=True) + 1e-5)",
    "torch": "import torch, torch.nn.functional as F\nF.layer_norm(torch.ones(1, 768), (768,))",
    "onnxruntime": "import sys, numpy as np, onnxruntime as ort\n"
                   "s = ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])\n"
                   f"s.run(None, {{'X': {_COLD_X}, 'Scale': np.ones(768, np.float32)}})",
}


def _run_python(code, env, *argv):
    proc = subprocess.run([sys.executable, "-c", code, *argv], env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"cold-start program failed:\n{code}\n{proc.stderr}")


def cold_start(impl, budget, backend=None, model_path=None):
    """Seconds for a fresh interpreter to run ``COLD_START[impl]`` (startup, imports, one call;
    ``measure``'s warm-up run fills the OS file cache and numba's disk cache). ``backend`` sets
    $FASTNORM_BACKEND; ``model_path`` is the .onnx file the onnxruntime program loads
    (``onnx_model``'s LayerNormalization: an application would ship it, not build it)."""
    return min(cold_start_samples(impl, budget, backend, model_path))


def cold_start_samples(impl, budget, backend=None, model_path=None):
    """``cold_start``'s samples (seconds each), as ``measure_samples`` gives them."""
    env = {k: v for k, v in os.environ.items() if k != "FASTNORM_BACKEND"}
    if backend:
        env["FASTNORM_BACKEND"] = backend
    argv = [model_path] if impl == "onnxruntime" else []
    return measure_samples(partial(_run_python, COLD_START[impl], env, *argv), budget, min_repeat=2)


# ---------------------------------------------------------------- running


@dataclass(frozen=True)
class Result:
    """One timing: ``impl`` is a fastnorm backend name or a baseline name; ``samples`` the
    seconds per call of each sample (``seconds`` is their minimum); ``nbytes`` is None where
    bandwidth means nothing (cold start); ``copy_gbps`` the copy bandwidth measured right
    before the case (None: the run's start value is the yardstick)."""

    op: str
    shape: tuple
    dtype: str
    impl: str
    samples: tuple
    nbytes: int | None = None
    copy_gbps: float | None = None

    @property
    def seconds(self):
        return min(self.samples)

    @property
    def median(self):
        return float(np.median(self.samples))

    @property
    def spread(self):
        """(max - min) / min of the samples: 0.1 when the slowest was 10% above the fastest."""
        return max(self.samples) / self.seconds - 1

    @property
    def gbps(self):
        return None if self.nbytes is None else self.nbytes / self.seconds / 1e9


#: a run whose copy bandwidth at its end differs from that at its start by more than this
#: fraction is flagged: the machine's load changed during it
COPY_DRIFT_LIMIT = 0.2


@dataclass
class Report:
    """Everything one run measured: the copy bandwidth at its start (``copy_gbps``, the
    yardstick of "% copy") and at its end (``copy_gbps_end``; None until measured)."""

    backends: list
    threads: int
    copy_gbps: dict
    results: list = field(default_factory=list)
    copy_gbps_end: dict | None = None

    @property
    def copy_best(self):
        return max(self.copy_gbps.values())

    @property
    def copy_drift(self):
        """Relative change of the best copy bandwidth from the run's start to its end (None
        before the end was measured)."""
        if not self.copy_gbps_end:
            return None
        return max(self.copy_gbps_end.values()) / self.copy_best - 1

    @property
    def copy_moved(self):
        """True when the copy bandwidth moved by more than ``COPY_DRIFT_LIMIT`` during the run."""
        drift = self.copy_drift
        return drift is not None and abs(drift) > COPY_DRIFT_LIMIT


class Progress:
    """A one-line text progress bar on ``stream`` (None: silent), redrawn in place."""

    def __init__(self, total, stream, width=28):
        self.total, self.stream, self.width = total, stream, width
        self.done = 0
        self._shown = 0  # length of the line on screen, to blank a longer one

    def _draw(self, label):
        if self.stream is None:
            return
        filled = self.width * self.done // self.total
        line = f"[{'#' * filled}{'.' * (self.width - filled)}] {self.done}/{self.total} {label}"
        self.stream.write("\r" + line.ljust(self._shown))
        self.stream.flush()
        self._shown = len(line)

    def task(self, label):
        """Show ``label`` as the task now running; the previous one is counted done."""
        self._draw(label)
        self.done += 1

    def close(self):
        self.done = self.total
        self._draw("done")
        if self.stream is not None:
            self.stream.write("\n")


def run(backends=_dispatch.BACKENDS, threads=None, names=None, quick=False, cold=True,
        baselines=tuple(BASELINES), progress=sys.stderr, all_shapes=False):
    """Measure the copy bandwidth, every case of the ops ``names`` (all when None) with each of
    ``backends`` and ``baselines``, then, when ``cold``, the cold starts. Returns a ``Report``.

    Each op runs on its ``default_shapes`` (every shape with ``all_shapes``). Baselines not
    installed are skipped. ``quick`` takes the ops' quick shapes, a 16 MB copy
    and few samples: seconds in all. ``progress``: the bar's stream, or None. The active
    backend and thread count are restored afterwards.
    """
    backends = list(backends)
    missing = [b for b in backends if not backend_available(b)]
    if missing or not backends:
        raise RuntimeError(f"fastnorm backend(s) {missing} not available here" if missing
                           else "no fastnorm backend is available here")
    baselines = [b for b in baselines if baseline_available(b)]
    threads = threads or fastnorm.get_num_threads()
    timing = {"budget": 0.01, "min_repeat": 2, "min_sample": 1e-3} if quick else {}
    plan = [(case, [*backends, *(b for b in case.op.baselines if b in baselines)])
            for case in cases(names, quick, all_shapes)]
    cold_runs = ([("fastnorm", b) for b in backends] +
                 [(i, None) for i in COLD_START if i != "fastnorm" and i in baselines]) if cold else []
    bar = Progress(2 + len(plan) + len(cold_runs), progress)
    saved = fastnorm.get_backend(), fastnorm.get_num_threads()
    try:
        fastnorm.set_num_threads(threads)
        copy_bytes = (16 if quick else 128) << 20
        bar.task("copy bandwidth")
        report = Report(backends, threads, copy_bandwidth(copy_bytes, threads) if quick
                        else warm_copy_bandwidth(copy_bytes, threads))
        # the yardstick of each case's "% copy" is a copy timed interleaved with it (this host's
        # bandwidth moves by tens of percent within minutes)
        copies = {} if quick else {f"copy {k}": (c, None) for k, c in copy_calls(copy_bytes, threads).items()}
        for case, impls in plan:
            inputs = case.inputs()
            nbytes = case.op.nbytes(inputs)
            bar.task(f"{case} ({', '.join(impls)})")
            entries = {}
            for impl in impls:
                if impl in backends:
                    entries[impl] = (case.op.fastnorm(inputs), partial(fastnorm.set_backend, impl))
                else:
                    entries[impl] = (case.op.baselines[impl](inputs, threads), None)
            entries.update(copies)
            samples = measure_interleaved(entries, **timing)
            local = max((2 * copy_bytes / min(samples[k]) / 1e9 for k in copies), default=None)
            for impl in impls:
                report.results.append(Result(case.op.name, case.shape, np.dtype(case.dtype).name,
                                             impl, tuple(samples[impl]), nbytes, local))
            inputs = entries = None  # free this case's arrays before the next case builds its own
        if cold_runs:
            report.results.extend(_cold_results(cold_runs, bar))
        bar.task("copy bandwidth again")
        report.copy_gbps_end = copy_bandwidth(copy_bytes, threads)
    finally:
        fastnorm.set_backend(saved[0])
        fastnorm.set_num_threads(saved[1])
        bar.close()
    return report


def _cold_results(runs, bar):
    """Results of ``cold_start`` for each (impl, backend) of ``runs``."""
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        model_path = os.path.join(tmp, "layer_norm.onnx")
        if any(impl == "onnxruntime" for impl, _ in runs):
            example = np.ones(COLD_START_SHAPE, F32)
            with open(model_path, "wb") as f:
                f.write(onnx_model("LayerNormalization", 17, {"X": example, "Scale": example[0]},
                                   axis=-1, epsilon=1e-5))
        for impl, backend in runs:
            bar.task(f"cold start {backend or impl}")
            results.append(Result(COLD_START_OP, COLD_START_SHAPE, "float32", backend or impl,
                                  tuple(cold_start_samples(impl, 1.0, backend, model_path))))
    return results


# ---------------------------------------------------------------- output


def format_shape(shape):
    return "x".join(map(str, shape))


def format_seconds(s):
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if s >= scale:
            break
    return f"{s / scale:.3g} {unit}"


SHORT_NAMES = {"onnxruntime": "ort"}  # baseline names in column headers


def table_rows(report):
    """The table as rows of strings, header first: one row per fastnorm backend and case.

    ``time`` is the minimum over the samples, ``median`` their median, ``spread`` (max - min)
    / min; GB/s and "% copy" are from the minimum, "% copy" against the copy timed interleaved
    with the case (the run's start value when there is none). ``vs X`` is X's time
    over fastnorm's (minima; above 1: fastnorm is faster); "-" where X did not run.
    """
    by_case = {}
    for r in report.results:
        by_case.setdefault((r.op, r.shape, r.dtype), {})[r.impl] = r
    rows = [["op", "shape", "dtype", "backend", "time", "median", "spread", "GB/s", "% copy",
             *(f"vs {SHORT_NAMES.get(b, b)}" for b in BASELINES)]]
    for (op, shape, dtype), impls in by_case.items():
        for backend in report.backends:
            ours = impls.get(backend)
            if ours is None:
                continue
            gbps = ours.gbps
            rows.append([
                op, format_shape(shape), dtype, backend, format_seconds(ours.seconds),
                format_seconds(ours.median), f"{100 * ours.spread:.0f}%",
                "-" if gbps is None else f"{gbps:.1f}",
                "-" if gbps is None else f"{100 * gbps / (ours.copy_gbps or report.copy_best):.0f}%",
                *(f"{impls[b].seconds / ours.seconds:.2f}x" if b in impls else "-"
                  for b in BASELINES)])
    return rows


def copy_drift_line(report):
    """A line on the copy bandwidth at the run's end; it starts with "WARNING" when the
    bandwidth moved by more than ``COPY_DRIFT_LIMIT`` (None when the end was not measured)."""
    if report.copy_drift is None:
        return None
    end = max(report.copy_gbps_end.values())
    line = (f"copy bandwidth at the end {end:.1f} GB/s ({100 * report.copy_drift:+.0f}% from "
            f"the start)")
    if report.copy_moved:
        return (f"WARNING: {line}: more than {100 * COPY_DRIFT_LIMIT:.0f}%; the machine's load "
                "changed during the run: times in different rows do not compare (each row's "
                "% copy and vs columns were timed in the same rounds); run it again for a "
                "steady run")
    return line


def format_table(report):
    """The report as text: a summary line, the aligned table, and the copy bandwidth at the
    end (a WARNING line when it moved too much during the run)."""
    copy = ", ".join(f"{k} {v:.1f}" for k, v in report.copy_gbps.items())
    lines = [f"threads {report.threads}; copy bandwidth {report.copy_best:.1f} GB/s "
             f"(read + write; {copy})"]
    local = [r.copy_gbps for r in report.results if r.copy_gbps]
    if local:
        lines.append(f"copy bandwidth timed with each case (the yardstick of its % copy): "
                     f"{min(local):.1f} to {max(local):.1f} GB/s, median {np.median(local):.1f}")
    rows = table_rows(report)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for k, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if i < 4 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(row, widths))))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    drift = copy_drift_line(report)
    if drift:
        lines.append(drift)
    return "\n".join(lines)


def plot(report, path):
    """Bar chart of every timing in ``report``: one panel per op, bars per implementation
    grouped by shape, time per call on a log scale. Saved to ``path`` (format from its suffix)."""
    from matplotlib.figure import Figure

    panels = {}
    for r in report.results:
        panels.setdefault(r.op, []).append(r)
    fig = Figure(figsize=(11, 3.2 * len(panels)), layout="constrained")
    for ax, (op, results) in zip(fig.subplots(len(panels), 1, squeeze=False)[:, 0], panels.items()):
        groups = list(dict.fromkeys((r.shape, r.dtype) for r in results))
        impls = list(dict.fromkeys(r.impl for r in results))
        width = 0.8 / len(impls)
        for k, impl in enumerate(impls):
            mine = {(r.shape, r.dtype): r.seconds for r in results if r.impl == impl}
            xs = [i + (k - (len(impls) - 1) / 2) * width for i, g in enumerate(groups) if g in mine]
            ax.bar(xs, [mine[g] for g in groups if g in mine], width,
                   label=f"fastnorm {impl}" if impl in report.backends else impl)
        ax.set_xticks(range(len(groups)), [f"{format_shape(s)} {d}" for s, d in groups])
        ax.set_yscale("log")
        ax.set_ylim(bottom=min(r.seconds for r in results) / 3)  # every bar visibly tall
        ax.set_ylabel("seconds per call")
        ax.set_title(f"{op} (lower is better; {report.threads} threads)")
        ax.legend(fontsize="small")
    fig.savefig(path)


# ---------------------------------------------------------------- command line


def add_arguments(parser):
    """The ``bench`` subcommand's options."""
    parser.add_argument("--all-shapes", action="store_true",
                        help="every shape of every op, from cache-resident up (minutes; default: "
                             "each op's headline shape and its single-row latency case)")
    parser.add_argument("--quick", action="store_true",
                        help="small shapes, few samples, no cold start: a few seconds (for tests)")
    parser.add_argument("--backend", choices=[*_dispatch.BACKENDS, "all"], default="all",
                        help="fastnorm CPU backend(s) to time (default: all)")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="threads for fastnorm, torch and onnxruntime "
                             "(default: fastnorm's default, the CPUs this process may use)")
    parser.add_argument("--ops", metavar="NAMES",
                        help=f"comma-separated ops to run (default: all of {', '.join(ops())})")
    parser.add_argument("--plot", metavar="FILE.png", help="also save a bar chart (needs matplotlib)")
    parser.add_argument("--no-cold-start", dest="cold", action="store_false",
                        help="skip the fresh-interpreter measurements")
    return parser


DESCRIPTION = """\
Time fastnorm's ops against NumPy, PyTorch and ONNX Runtime (those installed).

Measures the copy bandwidth first (the better of np.copyto and a multi-threaded numba copy,
GB/s counting bytes read and written; after copying for 6+ s, until it settles: the machine
warms up), then each op on its default shapes, the samples of every implementation and of a
copy interleaved (the host's bandwidth moves within seconds): the time per call in several
samples after a warm-up, with preallocated outputs, as the minimum ("time"), the median and
the spread ((max - min) / min); GB/s from the bytes the op must move at the minimum time;
"% copy" that as a fraction of the copy's bandwidth in the same rounds; "vs X" is X's time
over fastnorm's (above 1: fastnorm is faster). Then the cold start: a fresh interpreter importing and running
one layer_norm of shape 1x768, per backend (FASTNORM_BACKEND), vs NumPy, torch and an
onnxruntime session's creation and run. Last the copy bandwidth again: a WARNING line flags a
run during which it moved by more than 20% (the machine's load changed)."""


def main(args):
    """Run ``python -m fastnorm bench`` with ``args`` parsed by ``add_arguments``'s options;
    returns the exit status."""
    if args.threads is not None and args.threads < 1:
        sys.exit("bench: --threads must be at least 1")
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        sys.exit("bench: --plot needs matplotlib (pip install matplotlib)")
    if args.backend == "all":
        backends = [b for b in _dispatch.BACKENDS if backend_available(b)]
    else:
        backends = [args.backend]
    names = None if args.ops is None else [n.strip() for n in args.ops.split(",") if n.strip()]
    try:
        report = run(backends, args.threads, names, args.quick, args.cold and not args.quick,
                     all_shapes=args.all_shapes)
    except (ValueError, RuntimeError) as e:
        sys.exit(f"bench: {e}")
    print(format_table(report))
    if args.plot:
        plot(report, args.plot)
        print(f"plot saved to {args.plot}")
    return 0
