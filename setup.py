"""Builds the Cython kernels in kernels/cython (installed as fastnorm.kernels.cython) with OpenMP.

Everything else (metadata, packages) is in pyproject.toml.
"""
import glob
import os
import sys

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))
# one extension per kernels/cython/*.pyx, installed as fastnorm.kernels.cython.<name>
MODULES = sorted(os.path.basename(p)[:-4] for p in glob.glob(os.path.join(HERE, "kernels", "cython", "*.pyx")))

# The kernels are built for the CPU that builds them (like numba's JIT); set
# FASTNORM_ARCH_FLAGS="" (or e.g. "-march=x86-64-v3") for a binary that runs on other CPUs.
# The SIMD width never changes results: the kernels fix their lanes and summation order.
ARCH_FLAGS = os.environ.get("FASTNORM_ARCH_FLAGS", "-march=native").split()

if sys.platform == "win32":
    compile_args, link_args = ["/O2", "/openmp", "/fp:strict"], []
else:
    # -ffp-contract=off: no fused multiply-adds, so results match the numba backend bit for bit;
    # -fno-math-errno (after -fno-fast-math, which turns errno back on): sqrt vectorizes.
    compile_args = ["-O3", *ARCH_FLAGS, "-fopenmp", "-ffp-contract=off", "-fno-fast-math", "-fno-math-errno"]
    link_args = ["-fopenmp"]

extensions = [
    Extension(
        f"fastnorm.kernels.cython.{name}",
        [os.path.join("kernels", "cython", f"{name}.pyx")],
        include_dirs=[np.get_include(), os.path.join(HERE, "kernels", "cython")],
        depends=glob.glob(os.path.join("kernels", "cython", "*.h")),
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
    )
    for name in MODULES
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={
            "language_level": "3",
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    )
)
