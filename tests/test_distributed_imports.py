"""mpi4py stays optional: ``import fastnorm`` (and the CLI) never import it, and importing
fastnorm.distributed without it fails with an ImportError that says what to install."""
import subprocess
import sys


def run(code):
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_import_fastnorm_does_not_import_mpi4py():
    out = run("import sys, fastnorm, fastnorm.functional, fastnorm.nn, fastnorm.optim, fastnorm.demo, "
              "fastnorm.__main__; print('mpi4py' in sys.modules)")
    assert out == "False"


def test_distributed_without_mpi4py_says_what_to_install():
    out = run("import sys\n"
              "sys.modules['mpi4py'] = None  # as if not installed\n"
              "try:\n"
              "    import fastnorm.distributed\n"
              "except ImportError as e:\n"
              "    print(e)\n")
    assert "pip install 'fastnorm[dist]'" in out and "mpi4py" in out
