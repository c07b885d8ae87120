"""The host side of the numba.cuda ops: one module per family, with the same function names and
arguments as the CPU op it serves (``fastnorm._dispatch.DEVICE_MODULES`` maps each public module
to its CUDA module). Each validates device arrays, allocates results on the device and launches
the kernels of ``fastnorm.kernels.cuda``. Importing any of them imports numba.cuda; the public
API imports them only on the first call with a device array.
"""
