"""fastnorm beside PyTorch and ONNX Runtime in one process: ``python -m fastnorm.bench.neighbors``.

Services load several libraries at once, and on a small machine their thread pools compete:
an OpenMP pool that spins after its parallel region steals the cores fastnorm's next call
wants. This times fastnorm's headline cases (from the bench registry) in three phases of one
process, each sample one call, as medians over the samples:

- ``alone``: neither torch nor onnxruntime imported;
- ``loaded``: both imported, each having run once (their pools exist), then idle;
- ``interleaved``: before every fastnorm call, a multithreaded torch op and an ONNX Runtime
  run (the worst case: their threads have just finished working).

and prints each phase's median and its ratio to ``alone`` (the target: at most 1.10). A copy
of the case's bytes (``np.copyto``) is timed in the same loops, as the reference for how much
the machine itself moved (the neighbors' work also evicts caches and fills memory queues). Note that torch's wheel ships libgomp under the system
soname, so the process has one OpenMP runtime, configured by whichever library loads it first;
this script imports fastnorm first, as ``import fastnorm`` before torch does in a service.
"""
import argparse
import statistics
import time

import numpy as np

import fastnorm
from . import core

#: headline cases: (op, shape)
CASES = (("layer_norm", (32768, 1024)), ("rms_norm", (32768, 1024)),
         ("batch_norm", (64, 64, 56, 56)), ("dropout", (16384, 1024)),
         ("sgd_momentum_step", (256, 131072)), ("layer_norm", (1, 768)))


def _median_time(call, before, reps):
    times = []
    for _ in range(reps):
        before()
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _neighbors(threads):
    """A call running one multithreaded torch op and one ONNX Runtime session."""
    import torch

    torch.set_num_threads(threads)
    tx = torch.ones(2048, 1024)
    feeds = {"X": np.ones((2048, 1024), np.float32), "Scale": np.ones(1024, np.float32),
             "B": np.zeros(1024, np.float32)}
    session = core.onnx_session(core.onnx_model("LayerNormalization", 17, feeds, axis=-1), threads)

    def run():
        torch.nn.functional.layer_norm(tx, (1024,))
        session.run(None, feeds)

    run()
    return run


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fastnorm.bench.neighbors", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=fastnorm.get_num_threads())
    parser.add_argument("--backend", choices=("cython", "numba"), default="cython")
    parser.add_argument("--reps", type=int, default=30, help="samples per case and phase")
    args = parser.parse_args(argv)
    fastnorm.set_backend(args.backend)
    fastnorm.set_num_threads(args.threads)
    registry = core.ops()
    prepared = []
    for name, shape in CASES:
        case = core.Case(registry[name], shape)
        inputs = case.inputs()
        src = np.ones(case.op.nbytes(inputs) // 8, np.float32)
        call = case.op.fastnorm(inputs)
        call()
        prepared.append((str(case), call, lambda s=src, d=np.empty_like(src): np.copyto(d, s)))

    def phase(before):
        return [(_median_time(call, before, args.reps), _median_time(copy, before, args.reps))
                for _, call, copy in prepared]

    results = {"alone": phase(lambda: None)}
    neighbor = _neighbors(args.threads)
    results["loaded"] = phase(lambda: None)
    results["interleaved"] = phase(neighbor)
    print(f"fastnorm {args.backend}, {args.threads} threads, median of {args.reps} calls each; "
          "(x: time over alone's; copy x: the same for np.copyto of the op's bytes in the same "
          "loop, how much the machine itself moved)")
    print(f"{'case':34s} {'alone':>11s} {'loaded  (x, copy x)':>29s} {'interleaved  (x, copy x)':>29s}")
    for i, (label, _, _) in enumerate(prepared):
        alone, copy_alone = results["alone"][i]
        cells = [f"{alone * 1e3:8.3f} ms"]
        for ph in ("loaded", "interleaved"):
            t, c = results[ph][i]
            cells.append(f"{t * 1e3:8.3f} ms ({t / alone:4.2f}x, {c / copy_alone:4.2f}x)")
        print(f"{label:34s} {cells[0]:>11s} {cells[1]:>29s} {cells[2]:>29s}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
