"""Loads the compiled extension (sparsemask._C) after checking it matches the running torch."""
from __future__ import annotations

import torch


def load_extension() -> None:
    """Import sparsemask._C, whose static initialisers register the ``sparsemask::`` ops.

    Raises ImportError with the fix when the extension is missing or was built against
    another torch (a mismatched build would otherwise fail with undefined symbols, or worse).
    """
    try:
        from . import _build_info
    except ImportError:
        raise ImportError(
            "sparsemask's C++/CUDA extension is not built. In the source tree run `make build` "
            "(or `pip install --no-build-isolation -e .`)."
        ) from None
    if _build_info.TORCH_VERSION != torch.__version__:
        built = _build_info.TORCH_VERSION.split("+")[0]
        raise ImportError(
            f"sparsemask._C was built against torch {_build_info.TORCH_VERSION} but torch "
            f"{torch.__version__} is installed (the extension uses torch's C++ ABI, which changes between "
            f"versions). Either install the torch it was built for: `pip install torch=={built}`, or rebuild "
            "sparsemask for this torch: from the source tree `make clean build`, from an sdist/wheel "
            "`pip install --no-build-isolation --no-binary sparsemask --force-reinstall --no-deps sparsemask`."
        )
    try:
        from . import _C  # noqa: F401
    except ImportError as err:
        raise ImportError(
            f"sparsemask._C failed to load ({err}); rebuild with `make clean build`."
        ) from err
    # The library chose the ISA level of its CPU kernels when it loaded; a refused
    # SPARSEMASK_CPU_CAPABILITY fails the import here, with the reason, rather than at the
    # first CPU kernel call.
    try:
        cpu_capability()
    except RuntimeError as err:
        raise ImportError(str(err).split("\n")[0]) from None


def cpu_capability() -> str:
    """The ISA level of the CPU kernels in use: ``"avx512"``, ``"avx2"`` or ``"baseline"``.

    The extension holds the kernels compiled for each level and uses the best one the
    running CPU supports; the environment variable ``SPARSEMASK_CPU_CAPABILITY`` (read when
    the extension loads) forces a lower one. See docs/architecture.md, "Building".
    """
    return torch.ops.sparsemask.cpu_capability()


def built_with_cuda() -> bool:
    """Whether the CUDA kernels were compiled into sparsemask._C."""
    from . import _build_info

    return bool(_build_info.WITH_CUDA)
