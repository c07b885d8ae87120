"""Tests that run under ``mpiexec -n 2 python -m mpi4py -m pytest tests/distributed`` (started by
tests/test_distributed.py, which sets FASTNORM_MPI_TESTS=1). A plain ``python -m pytest``
collects nothing here: these tests need every rank to run the same collectives."""
import os

if os.environ.get("FASTNORM_MPI_TESTS") != "1":
    collect_ignore_glob = ["test_*.py"]
