"""The built-in backends of the masked convolution, one file each; importing a file
registers it with :func:`sparsemask.dispatch.register_backend` (docs/architecture.md,
"Adding a backend").

``cpu`` / ``cuda``  the C++ and CUDA C++ kernels (``cpp.py``)
``triton``          the Triton kernels (``triton.py``; imports ``triton`` on first use)
``dense``           ``F.conv2d(...) * mask``, the reference (``dense.py``)
"""
from . import cpp, triton, dense  # noqa: F401  (registration order: auto's tie-break)
