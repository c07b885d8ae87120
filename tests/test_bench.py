"""fastnorm.bench: the command line runs, and every comparison implementation it times computes
what fastnorm computes (a benchmark against a wrong baseline would be meaningless)."""
import importlib.util
import subprocess
import sys

import numpy as np
import pytest

import fastnorm
from fastnorm.bench import core as bench

import reference as ref

OPS = list(bench.ops().values())
CASES = bench.cases(quick=True)


HAVE_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


def _cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "fastnorm", "bench", *args],
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """(process, plot path): one ``bench --quick`` run, with ``--plot`` when matplotlib is
    installed (one run serves both tests: each costs seconds)."""
    path = tmp_path_factory.mktemp("bench") / "bench.png"
    return _cli("--quick", *(["--plot", str(path)] if HAVE_MATPLOTLIB else [])), path


def test_quick_run_prints_the_table(quick_run):
    proc, _ = quick_run
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if not line.startswith("plot saved")]
    assert lines[0].startswith("threads ") and "copy bandwidth" in lines[0]
    assert lines[1].split() == ["op", "shape", "dtype", "backend", "time", "median", "spread",
                                "GB/s", "%", "copy", "vs", "numpy", "vs", "torch", "vs", "ort"]
    assert lines[-1].startswith(("copy bandwidth at the end", "WARNING: copy bandwidth"))
    body = [line.split()[0] for line in lines[3:-1]]
    for op in OPS:
        assert op.name in body
    for line in lines[3:-1]:  # time, median and spread of every row
        cells = line.split()
        t, median = (float(cells[k]) * bench_unit(cells[k + 1]) for k in (4, 6))
        assert 0 < t <= median and cells[8].endswith("%") and float(cells[8][:-1]) >= 0
    assert "done" in proc.stderr  # the progress bar finished


def bench_unit(unit):
    return {"s": 1.0, "ms": 1e-3, "us": 1e-6}[unit]


def test_result_gives_min_median_and_spread():
    r = bench.Result("op", (2, 3), "float32", "cython", (3.0, 2.0, 2.5, 4.0), nbytes=8)
    assert r.seconds == 2.0 and r.median == 2.75 and r.spread == 1.0 and r.gbps == 4e-9


@pytest.mark.parametrize("end, moved", [(10.0, False), (8.1, False), (12.1, True), (7.9, True)])
def test_a_run_whose_copy_bandwidth_moved_is_flagged(end, moved):
    report = bench.Report(["cython"], 2, {"np.copyto": 10.0, "numba x2": 9.0})
    assert report.copy_drift is None and not report.copy_moved
    assert bench.copy_drift_line(report) is None
    report.copy_gbps_end = {"np.copyto": end, "numba x2": 1.0}
    assert report.copy_drift == pytest.approx(end / 10.0 - 1)
    assert report.copy_moved is moved
    line = bench.copy_drift_line(report)
    assert line.startswith("WARNING") is moved and f"{end:.1f} GB/s" in line
    assert bench.format_table(report).splitlines()[-1] == line


def test_percent_copy_uses_the_copy_measured_next_to_the_case():
    report = bench.Report(["cython"], 2, {"np.copyto": 10.0})
    # 8 bytes in 1e-9 s: 8 GB/s; against the case's own copy (16 GB/s): 50%, else the start's 80%
    report.results = [bench.Result("a", (2,), "float32", "cython", (1e-9,), 8, copy_gbps=16.0),
                      bench.Result("b", (2,), "float32", "cython", (1e-9,), 8)]
    rows = bench.table_rows(report)
    col = rows[0].index("% copy")
    assert [r[col] for r in rows[1:]] == ["50%", "80%"]
    assert "copy bandwidth timed with each case (the yardstick of its % copy): 16.0 to 16.0 GB/s" in \
        bench.format_table(report)


def test_warm_copy_bandwidth_waits_for_the_machine(monkeypatch):
    """Measured again and again for min_seconds, then until two in a row agree."""
    values = iter([40.0, 41.0, 55.0, 56.0, 80.0])
    monkeypatch.setattr(bench, "copy_bandwidth", lambda *a, **k: {"x": next(values)})
    clock = iter(range(100))
    monkeypatch.setattr(bench.time, "perf_counter", lambda: float(next(clock)))
    # t = 1: 41 (before min_seconds); t = 2: 55 (moved by 34%); t = 3: 56 (within 5%): returned
    assert bench.warm_copy_bandwidth(1, 2, min_seconds=2.0, max_seconds=50.0) == {"x": 56.0}


def test_measure_interleaved_takes_rounds_of_every_call():
    order = []
    entries = {"a": (lambda: order.append("a"), lambda: order.append("before a")),
               "b": (lambda: order.append("b"), None)}
    samples = bench.measure_interleaved(entries, budget=0.0, min_repeat=4, min_sample=0.0, rounds=2)
    assert sorted(samples) == ["a", "b"] and all(len(s) == 5 for s in samples.values())
    assert all(0 <= t < 1e-3 for s in samples.values() for t in s)
    # warm-up and first sample of each; then 2 rounds visiting each: the hook, an untimed
    # call, 2 samples
    assert order == ["before a", "a", "a", "b", "b"] + ["before a", "a", "a", "a", "b", "b", "b"] * 2


def test_measure_samples_gives_each_samples_time_per_call():
    calls = []
    samples = bench.measure_samples(lambda: calls.append(1), budget=0.0, min_repeat=4,
                                    min_sample=1e-4)
    assert len(samples) >= 4 and all(0 < t < 1e-3 for t in samples)
    assert bench.measure(lambda: None, budget=0.0, min_repeat=2, min_sample=1e-4) < 1e-3


@pytest.mark.skipif(not HAVE_MATPLOTLIB, reason="matplotlib is not installed")
def test_plot_writes_a_png(quick_run):
    proc, path = quick_run
    assert proc.returncode == 0, proc.stderr
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unknown_op_is_refused():
    proc = _cli("--quick", "--ops", "no_such_op")
    assert proc.returncode != 0 and "no_such_op" in proc.stderr


def test_register_refuses_a_taken_name_an_unknown_or_a_missing_baseline():
    op = OPS[0]
    with pytest.raises(ValueError, match="already registered"):
        bench.register(op)
    numpy = op.baselines["numpy"]
    for baselines, message in (({"numpy": numpy, "jax": numpy}, "unknown baselines"),
                               ({}, "needs a numpy baseline")):
        with pytest.raises(ValueError, match=message):
            bench.register(bench.Op("new_op", op.make_inputs, op.fastnorm, op.nbytes, baselines))
    assert "new_op" not in bench.ops()


def _arrays(result):
    """A call's outputs as a tuple of NumPy arrays (torch tensors and ORT lists included)."""
    items = result if isinstance(result, (tuple, list)) else (result,)
    return tuple(np.asarray(t.detach() if hasattr(t, "detach") else t) for t in items)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_backward_inputs_carry_the_forwards_statistics(case):
    inputs = case.inputs()
    if "stats" not in inputs:
        pytest.skip("a forward op")
    stats_of = ref.layer_norm_stats if "bias" in inputs else ref.rms_norm_stats
    expected = stats_of(inputs["x"], eps=inputs["eps"])
    got = inputs["stats"] if isinstance(inputs["stats"], tuple) else (inputs["stats"],)
    for g, e in zip(got, expected if isinstance(expected, tuple) else (expected,), strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-6)


@pytest.mark.parametrize("baseline", list(bench.BASELINES))
@pytest.mark.parametrize("case", CASES, ids=str)
def test_baselines_agree_with_fastnorm(case, baseline):
    if baseline not in case.op.baselines:
        pytest.skip(f"{case.op.name} has no {baseline} baseline")
    if not bench.baseline_available(baseline):
        pytest.skip(f"{baseline} is not installed")
    inputs = case.inputs()
    ours = _arrays(case.op.fastnorm(inputs)())
    theirs = _arrays(case.op.baselines[baseline](inputs, fastnorm.get_num_threads())())
    assert len(theirs) == len(ours)
    for t, o in zip(theirs, ours):
        assert t.shape == o.shape
        np.testing.assert_allclose(t, o, rtol=1e-4, atol=1e-4 * np.abs(o).max())


# ---------------------------------------------------------------- random ops, checked by law
# (their registry inputs are zeros, see fastnorm.bench.dropout; here the same callables run on
# random data and each implementation is checked against the law of dropout)

DROPOUT_OPS = [op for op in OPS if op.name in ("dropout", "dropout_backward")]


@pytest.mark.parametrize("impl", ["fastnorm", *bench.BASELINES])
@pytest.mark.parametrize("op", DROPOUT_OPS, ids=lambda op: op.name)
def test_dropout_rows_obey_the_law(op, impl):
    if impl != "fastnorm" and (impl not in op.baselines or not bench.baseline_available(impl)):
        pytest.skip(f"{op.name} has no {impl} baseline here")
    inputs = bench.Case(op, (256, 1024)).inputs()
    key = "dy" if "dy" in inputs else "x"
    data = np.random.default_rng(0).standard_normal((256, 1024)).astype(np.float32) + 3.0
    inputs[key][...] = data
    call = op.fastnorm(inputs) if impl == "fastnorm" else op.baselines[impl](inputs, fastnorm.get_num_threads())
    (out,) = _arrays(call())
    p = inputs["p"]
    kept = out != 0
    np.testing.assert_allclose(out[kept], data[kept] / (1 - p), rtol=1e-6)
    assert abs(kept.mean() - (1 - p)) < 5 * np.sqrt(p * (1 - p) / out.size)


@pytest.mark.skipif(not (bench.baseline_available("torch") and bench.baseline_available("onnxruntime")),
                    reason="the neighbors run needs torch and onnxruntime")
def test_neighbors_run_prints_every_case_and_phase(capsys):
    from fastnorm.bench import neighbors

    threads, backend = fastnorm.get_num_threads(), fastnorm.get_backend()
    try:
        assert neighbors.main(["--reps", "1", "--threads", "1", "--backend", backend]) == 0
    finally:
        fastnorm.set_num_threads(threads)
        fastnorm.set_backend(backend)
    rows = [line for line in capsys.readouterr().out.splitlines() if " float32 " in line]
    assert len(rows) == len(neighbors.CASES)
    for row in rows:
        assert row.count(" ms") == 3 and row.count("x,") == 2
