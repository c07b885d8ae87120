"""``python -m fastnorm demo``: training to inference end to end with fastnorm's layers.

A small MLP, ``Linear(64, H, bias=False) -> BatchNorm1d(H) -> ReLU -> Dropout(p) -> Linear(H, 10)``,
learns scikit-learn's handwritten digits (8x8 images, 1797 samples, shipped inside the
scikit-learn package) with AdamW and softmax cross-entropy, all of it fastnorm's kernels and
layers. Then the model is saved with ``fastnorm.save``, reloaded with ``fastnorm.load``, the
BatchNorm is folded into the Linear layer before it (``fold_batch_norm``), and the folded
model serves the test set one request at a time; its predictions are checked against the
unfolded model's.

``--ranks N`` runs the same training data-parallel on N MPI processes (``mpiexec``): every
global batch is split across the ranks, BatchNorm becomes ``SyncBatchNorm`` and
``allreduce_grads_`` averages the gradients, so the N ranks follow the single process's
trajectory up to rounding. Dropout draws the mask of the whole global batch from its seed
(``fn.dropout_mask``, the counter-based generator) and each rank applies its rows: the same
mask as one process, which is ``fn.dropout`` with that seed, bit for bit.
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np

DESCRIPTION = __doc__.split("\n\n", 1)[1]
CLASSES = 10


def add_arguments(parser):
    parser.add_argument("--epochs", type=int, default=15, help="passes over the training set (default 15)")
    parser.add_argument("--batch-size", type=int, default=64, help="global batch size (default 64)")
    parser.add_argument("--hidden", type=int, default=128, help="hidden units (default 128)")
    parser.add_argument("--lr", type=float, default=3e-3, help="AdamW learning rate (default 3e-3)")
    parser.add_argument("--weight-decay", type=float, default=1e-2, help="AdamW weight decay (default 1e-2)")
    parser.add_argument("--dropout", type=float, default=0.2, help="dropout probability (default 0.2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split, the init and the masks")
    parser.add_argument("--ranks", type=int, default=1,
                        help="MPI processes (>1 relaunches under mpiexec with SyncBatchNorm; needs fastnorm[dist])")
    parser.add_argument("--save", metavar="PATH", default=None,
                        help="where to save the trained model (default: a temporary file)")
    parser.add_argument("--mpi-worker", action="store_true", help=argparse.SUPPRESS)


def _forwarded(args):
    """The command line of one rank: the same options, run as an MPI worker."""
    out = ["-m", "fastnorm", "demo", "--mpi-worker"]
    for name in ("epochs", "batch_size", "hidden", "lr", "weight_decay", "dropout", "seed", "ranks", "save"):
        value = getattr(args, name)
        if value is not None:
            out += ["--" + name.replace("_", "-"), str(value)]
    return out


def main(args):
    """Run the demo (relaunching under mpiexec for ``--ranks`` > 1); returns the exit status."""
    if args.ranks < 1 or args.epochs < 1 or args.batch_size < args.ranks * 2:
        print("demo: --ranks and --epochs must be >= 1 and --batch-size >= 2 per rank", file=sys.stderr)
        return 2
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        print("demo: the digits data set ships with scikit-learn: pip install 'fastnorm[demo]' "
              "(or pip install scikit-learn)", file=sys.stderr)
        return 2
    if args.ranks > 1 and not args.mpi_worker:
        from . import _mpirun

        if not _mpirun.have_mpi4py():
            print(f"demo: --ranks needs MPI: {_mpirun.INSTALL_HINT}", file=sys.stderr)
            return 2
        import subprocess

        return subprocess.call(_mpirun.command(args.ranks, _forwarded(args)), env=_mpirun.environment())
    digits = load_digits()
    return run(digits.data, digits.target, args)


# ---------------------------------------------------------------- the model


class Model:
    """fc1 -> bn -> ReLU -> dropout -> fc2; ``layers`` in the optimizer's order."""

    def __init__(self, features, hidden, p, seed, comm=None):
        from . import nn

        # no bias before a BatchNorm: it would cancel it (its gradient is 0 up to rounding,
        # which Adam would amplify into lr-sized random steps)
        self.fc1 = nn.Linear(features, hidden, bias=False, seed=seed)
        self.bn = nn.BatchNorm1d(hidden)
        if comm is not None:
            from .distributed import SyncBatchNorm

            self.bn = SyncBatchNorm.convert_sync_batchnorm(self.bn, comm)
        self.fc2 = nn.Linear(hidden, CLASSES, seed=seed + 2)
        self.layers = {"fc1": self.fc1, "bn": self.bn, "fc2": self.fc2}
        self.p = p

    def params(self):
        return [a for layer in self.layers.values() for a in layer.params.values()]

    def grads(self):
        return [layer.grads[k] for layer in self.layers.values() for k in layer.params]

    def train(self, mode=True):
        for layer in self.layers.values():
            layer.train(mode)

    def forward(self, x, mask=None):
        """Logits; ``mask`` (this shard's rows of the global dropout mask) in training."""
        h = self.bn(self.fc1(x))
        self._relu = h > 0
        a = np.where(self._relu, h, h.dtype.type(0))
        if mask is not None:
            self._mask, self._scale = mask, a.dtype.type(1.0 / (1.0 - self.p))
            a = np.where(mask, a * self._scale, a * 0)  # = fn.dropout(a, p, seed): kept * 1/(1-p)
        return self.fc2(a)

    def backward(self, dlogits):
        da = self.fc2.backward(dlogits)
        if getattr(self, "_mask", None) is not None:
            da = np.where(self._mask, da * self._scale, da * 0)
        self.fc1.backward(self.bn.backward(np.where(self._relu, da, da.dtype.type(0))))

    def state_dict(self):
        return {name: layer.state_dict() for name, layer in self.layers.items()}

    def load_state_dict(self, state):
        for name, layer in self.layers.items():
            layer.load_state_dict(state[name])


def fold(state, eps=1e-5):
    """(W1', b1', W2, b2): the eval-mode model with its BatchNorm folded into fc1."""
    from .functional import fold_batch_norm

    w1, b1 = fold_batch_norm(state["fc1"]["weight"], state["fc1"].get("bias"), state["bn"], eps=eps)
    return w1, b1, state["fc2"]["weight"], state["fc2"]["bias"]


def serve(folded, x):
    """Logits of the folded model: two matrix products and a ReLU."""
    w1, b1, w2, b2 = folded
    return np.maximum(x @ w1.T + b1, 0) @ w2.T + b2


# ---------------------------------------------------------------- training


def _split(data, target, seed, test_fraction=0.2):
    x = (np.asarray(data, np.float64) / 16.0).astype(np.float32)  # pixels are 0..16
    y = np.asarray(target, np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = int(round(len(y) * test_fraction))
    return x[order[n_test:]], y[order[n_test:]], x[order[:n_test]], y[order[:n_test]]


def _progress(epoch, epochs, done, total, width=30):
    """A text progress bar on stderr, redrawn in place on a terminal (elsewhere, once per epoch)."""
    tty = sys.stderr.isatty()
    if not tty and done < total:
        return
    k = width * done // total
    sys.stderr.write(f"{chr(13) if tty else ''}epoch {epoch}/{epochs} [{'#' * k}{'.' * (width - k)}] "
                     f"{done}/{total} batches{chr(10) if done == total else ''}")
    sys.stderr.flush()


def run(data, target, args):
    """Train, save, reload, fold, serve; rank 0 prints. Returns the exit status."""
    from . import functional as fn, io, optim

    comm = None
    rank, size = 0, 1
    if args.ranks > 1:
        from .distributed import MPI, allreduce_grads_

        comm = MPI.COMM_WORLD
        rank, size = comm.Get_rank(), comm.Get_size()
    say = print if rank == 0 else (lambda *a, **k: None)
    x_train, y_train, x_test, y_test = _split(data, target, args.seed)
    model = Model(x_train.shape[1], args.hidden, args.dropout, args.seed, comm)
    opt = optim.AdamW(model.params(), lr=args.lr, weight_decay=args.weight_decay)
    B = args.batch_size
    lo, hi = rank * B // size, (rank + 1) * B // size  # this rank's rows of every global batch
    nb = len(y_train) // B  # the last partial batch is dropped (a new shuffle every epoch)
    say(f"digits: {len(y_train)} training / {len(y_test)} test images of 8x8 pixels; MLP "
        f"64-{args.hidden}-10 with {'SyncBatchNorm over ' + str(size) + ' MPI ranks' if comm else 'BatchNorm1d'}, "
        f"dropout {args.dropout}, AdamW lr {args.lr}; global batch {B}, {nb} steps per epoch")
    start = time.perf_counter()
    step = 0
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        perm = np.random.default_rng([args.seed, epoch]).permutation(len(y_train))
        tally = np.zeros(3)  # loss sum, correct, count over this rank's rows
        for i in range(nb):
            idx = perm[i * B:(i + 1) * B][lo:hi]
            mask = fn.dropout_mask((B, args.hidden), args.dropout, seed=args.seed * 1_000_003 + step)[lo:hi]
            logits = model.forward(x_train[idx], mask)
            loss, dlogits = fn.softmax_cross_entropy(logits, y_train[idx], return_grad=True)
            model.backward(dlogits)
            grads = model.grads()
            if comm is not None:
                allreduce_grads_(grads, comm, check=step == 0)  # same model: check it once
            opt.step(grads)
            tally += (float(loss) * len(idx), int((logits.argmax(1) == y_train[idx]).sum()), len(idx))
            step += 1
            if rank == 0:
                _progress(epoch, args.epochs, i + 1, nb)
        if comm is not None:
            comm.Allreduce(MPI.IN_PLACE, tally, op=MPI.SUM)
        model.train(False)
        test_acc = float((model.forward(x_test).argmax(1) == y_test).mean())
        say(f"epoch {epoch:2d}/{args.epochs}  loss {tally[0] / tally[2]:.4f}  train acc "
            f"{tally[1] / tally[2]:.4f}  test acc {test_acc:.4f}  ({time.perf_counter() - t0:.2f} s)",
            flush=True)
    say(f"trained in {time.perf_counter() - start:.2f} s on {size} process(es)")
    if rank != 0:
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        path = args.save or os.path.join(tmp, "digits-mlp.safetensors")
        io.save(path, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                       "config": {"hidden": args.hidden, "dropout": args.dropout, "eps": model.bn.eps}})
        say(f"saved model and optimizer state to {path} ({os.path.getsize(path)} bytes)")
        state = io.load(path)
    restored = Model(x_train.shape[1], state["config"]["hidden"], state["config"]["dropout"], 0)
    restored.load_state_dict(state["model"])
    restored.train(False)
    unfolded = restored.forward(x_test)
    folded = fold(state["model"], state["config"]["eps"])
    t0 = time.perf_counter()
    served = np.concatenate([serve(folded, x_test[i:i + 1]) for i in range(len(x_test))])
    per_request = (time.perf_counter() - t0) / len(x_test)
    diff = float(np.abs(served - unfolded).max())
    same = int((served.argmax(1) == unfolded.argmax(1)).sum())
    say(f"reloaded, BatchNorm folded into fc1: max |logit difference| {diff:.2e} vs the unfolded "
        f"model, same prediction on {same}/{len(x_test)} test images")
    accuracy = float((served.argmax(1) == y_test).mean())
    say(f"served {len(x_test)} single-image requests, {per_request * 1e6:.0f} us each")
    say(f"test accuracy (folded model): {accuracy:.4f}")
    if same != len(x_test) or not diff <= 1e-4 * max(1.0, float(np.abs(unfolded).max())):
        print("demo: folded and unfolded predictions disagree", file=sys.stderr)
        return 1
    return 0
