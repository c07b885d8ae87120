"""Starting Python under mpiexec (for ``python -m fastnorm demo --ranks N`` and the tests),
without importing mpi4py in the launching process."""
import importlib.util
import os
import shutil
import sys

INSTALL_HINT = "pip install 'fastnorm[dist]' (mpi4py and the MPICH wheel that brings mpiexec)"


def have_mpi4py():
    return importlib.util.find_spec("mpi4py") is not None


def mpiexec():
    """The mpiexec next to this Python (a virtualenv's bin/, where the ``mpich`` wheel puts
    it), else the first on PATH; FileNotFoundError naming what to install otherwise."""
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    if os.path.isfile(here) and os.access(here, os.X_OK):
        return here
    found = shutil.which("mpiexec")
    if found is None:
        raise FileNotFoundError(f"no mpiexec next to {sys.executable} nor on PATH: {INSTALL_HINT}")
    return found


def command(ranks, args):
    """``mpiexec -n ranks python -m mpi4py ARGS``: mpi4py's runner aborts every rank when one
    raises, so a failure never leaves the others waiting in a collective."""
    return [mpiexec(), "-n", str(int(ranks)), sys.executable, "-m", "mpi4py", *args]


def environment():
    """os.environ plus what Open MPI needs to run as root (MPICH ignores it)."""
    return {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
