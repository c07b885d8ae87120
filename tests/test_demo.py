"""``python -m fastnorm demo``: trains, saves, reloads, folds BatchNorm and serves, exit code 0;
``--ranks 2`` (data-parallel under mpiexec, SyncBatchNorm) follows the single process."""
import os
import re
import subprocess
import sys

import pytest

import fastnorm
from fastnorm import __main__ as cli, _mpirun

pytest.importorskip("sklearn", reason="the demo's data set ships with scikit-learn")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPOCH = re.compile(r"^epoch +(\d+)/(\d+)  loss ([0-9.]+)  train acc ([0-9.]+)  test acc ([0-9.]+)", re.M)
FINAL = re.compile(r"^test accuracy \(folded model\): ([0-9.]+)$", re.M)


def demo(*args, timeout=300):
    proc = subprocess.run([sys.executable, "-m", "fastnorm", "demo", "--epochs", "2", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=timeout,
                          env=_mpirun.environment(), stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    epochs = [tuple(float(g) for g in m.groups()) for m in EPOCH.finditer(proc.stdout)]
    assert [e[0] for e in epochs] == [1, 2], proc.stdout
    final = FINAL.search(proc.stdout)
    assert final, proc.stdout
    assert re.search(r"same prediction on (\d+)/\1 test images", proc.stdout), proc.stdout
    assert "epoch 2/2 [##############################] 22/22 batches" in proc.stderr  # the bar
    return epochs, float(final.group(1)), proc.stdout


@pytest.fixture(scope="module")
def single():
    return demo()


def test_demo_trains_saves_folds_and_serves(single, tmp_path):
    epochs, accuracy, out = single
    assert epochs[1][2] < epochs[0][2]  # the loss falls
    assert accuracy > 0.9 and epochs[1][4] > 0.9
    path = tmp_path / "model.safetensors"
    _, accuracy2, _ = demo("--save", str(path))
    assert accuracy2 == accuracy  # seeded: the same run
    state = fastnorm.load(str(path))
    assert sorted(state["model"]) == ["bn", "fc1", "fc2"]
    assert sorted(state["model"]["bn"]) == ["bias", "num_batches_tracked", "running_mean",
                                             "running_var", "weight"]
    assert int(state["model"]["bn"]["num_batches_tracked"]) == 2 * 22
    assert set(state["optimizer"]) == {"state", "param_groups"}


@pytest.mark.skipif(not _mpirun.have_mpi4py(), reason=f"mpi4py is not installed: {_mpirun.INSTALL_HINT}")
def test_demo_on_two_ranks_follows_the_single_process(single):
    epochs, accuracy, out = demo("--ranks", "2")
    assert "SyncBatchNorm over 2 MPI ranks" in out
    assert out.count("test accuracy") == 1  # rank 0 prints
    # the same trajectory up to rounding (statistics and gradient sums are added in another
    # order): the printed losses agree to their 4 decimals, the accuracies to one image
    for mine, theirs in zip(epochs, single[0]):
        assert abs(mine[2] - theirs[2]) <= 2e-4, (mine, theirs)
        assert abs(mine[4] - theirs[4]) <= 1 / 359 + 1e-9, (mine, theirs)
    assert abs(accuracy - single[1]) <= 1 / 359 + 1e-9


def test_demo_without_scikit_learn_says_what_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # import fails
    assert cli.main(["demo", "--epochs", "1"]) == 2
    assert "pip install 'fastnorm[demo]'" in capsys.readouterr().err


def test_demo_rejects_bad_options(capsys):
    assert cli.main(["demo", "--ranks", "0"]) == 2
    assert "--ranks" in capsys.readouterr().err
