"""Build sparsemask._C: the C++ CPU kernels always, the CUDA kernels when a CUDA-enabled
torch and nvcc are present (or FORCE_CUDA=1).

Environment knobs:
  FORCE_CUDA=1            build the CUDA sources even if torch/nvcc detection says no
  SPARSEMASK_NO_CUDA=1    never build the CUDA sources
  SPARSEMASK_DEBUG=1      keep debug info (-g; the default build passes -g0)
  SPARSEMASK_NATIVE=1     add -march=native to every unit (to compare with the default,
                          which builds the CPU kernels per ISA level and picks one at load
                          time, so a wheel runs on any x86-64 CPU: csrc/cpu/isa.h)
  SPARSEMASK_PORTABLE=1   retired (the default is portable now); accepted and ignored
  SPARSEMASK_SKIP_EXT=1   install the Python package only (the Makefile's venv step: the
                          extension is then compiled once, by `make build`, in place)
  TORCH_CUDA_ARCH_LIST    defaults to "9.0" (H100/H200)
  CUDA_HOME               defaults to /usr/local/cuda when it exists
"""
import glob
import os
import platform
import sysconfig

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))
if "CUDA_HOME" not in os.environ and os.path.exists("/usr/local/cuda/bin/nvcc"):
    os.environ["CUDA_HOME"] = "/usr/local/cuda"
os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "9.0")

import torch  # noqa: E402  (after the environment is set: cpp_extension reads it on import)
from torch.utils.cpp_extension import (  # noqa: E402
    CUDA_HOME,
    BuildExtension,
    CppExtension,
    CUDAExtension,
)


def _want_cuda() -> bool:
    if os.environ.get("SPARSEMASK_NO_CUDA") == "1":
        return False
    if os.environ.get("FORCE_CUDA") == "1":
        return True
    return torch.version.cuda is not None and CUDA_HOME is not None


def _pip_nvidia_includes() -> list[str]:
    """torch's CUDA headers include cusparse/cublas headers that pip installs under
    site-packages/nvidia/cu*/include, not under CUDA_HOME."""
    site = sysconfig.get_paths()["purelib"]
    return sorted(glob.glob(os.path.join(site, "nvidia", "cu*", "include")))


def _cxx_flags() -> list[str]:
    # -g0 overrides the -g of Python's CFLAGS: debug info for the ATen headers costs ~35% of
    # the compile time of the registration units and 60x their object size (measured).
    # SPARSEMASK_DEBUG=1 keeps it, for gdb.
    flags = ["-O3", "-fopenmp", "-Wall", "-Wno-unused-function"]
    if os.environ.get("SPARSEMASK_DEBUG") != "1":
        flags.append("-g0")
    if os.environ.get("SPARSEMASK_NATIVE") == "1" and platform.machine() in ("x86_64", "AMD64"):
        # Opt-in, for measuring: the library then runs only on CPUs with the build machine's ISA.
        flags.append("-march=native")
    return flags


# The CPU kernels with the hot loops are compiled once per ISA level by the wrappers in
# csrc/cpu/isa/ (one unit per level for all three: csrc/cpu/kernels_at_level.h), never on
# their own. Everything else (schemas, checks, the plan, masked_batch_norm's memory-bound
# epilogue, csrc/cpu/dispatch.cpp) is compiled once, for baseline x86-64.
PER_LEVEL_SOURCES = ("masked_conv2d.cpp", "defective_unit.cpp", "defective_block.cpp")


def _cpu_sources() -> list[str]:
    once = [p for p in sorted(glob.glob(os.path.join("csrc", "cpu", "*.cpp")))
            if os.path.basename(p) not in PER_LEVEL_SOURCES]
    return once + sorted(glob.glob(os.path.join("csrc", "cpu", "isa", "*.cpp")))


def _write_build_info(with_cuda: bool) -> None:
    path = os.path.join(HERE, "sparsemask", "_build_info.py")
    with open(path, "w") as f:
        f.write("# Written by setup.py at build time; compared with the running torch on import.\n")
        f.write(f"TORCH_VERSION = {torch.__version__!r}\n")
        f.write(f"TORCH_CUDA_VERSION = {torch.version.cuda!r}\n")
        f.write(f"WITH_CUDA = {with_cuda!r}\n")
        f.write(f"CUDA_ARCH_LIST = {os.environ.get('TORCH_CUDA_ARCH_LIST')!r}\n")
        f.write(f"NATIVE = {'-march=native' in _cxx_flags()!r}\n")


def _extension():
    with_cuda = _want_cuda()
    _write_build_info(with_cuda)
    sources = [os.path.join("csrc", "sparsemask.cpp"), os.path.join("csrc", "plan.cpp")]
    sources += sorted(glob.glob(os.path.join("csrc", "ops", "*.cpp")))
    sources += _cpu_sources()
    sources += sorted(glob.glob(os.path.join("csrc", "autocast", "*.cpp")))
    sources += sorted(glob.glob(os.path.join("csrc", "autograd", "*.cpp")))
    include_dirs = [os.path.join(HERE, "csrc")]
    extra = {"cxx": _cxx_flags()}
    if not with_cuda:
        return CppExtension(
            "sparsemask._C", sources, include_dirs=include_dirs,
            extra_compile_args=extra, extra_link_args=["-fopenmp"],
        )
    sources += sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))
    include_dirs += _pip_nvidia_includes()
    extra["cxx"].append("-DSPARSEMASK_WITH_CUDA")
    extra["nvcc"] = ["-O3", "-DSPARSEMASK_WITH_CUDA", "--expt-relaxed-constexpr", "-lineinfo"]
    return CUDAExtension(
        "sparsemask._C", sources, include_dirs=include_dirs,
        extra_compile_args=extra, extra_link_args=["-fopenmp"],
    )


# The extension links against this exact torch (its C++ ABI; sparsemask/_extension.py
# refuses to load under another), so the package's metadata pins it: a wheel built here
# asks pip for the torch it was built with. `==2.14.1` also matches local builds such as
# 2.14.1+cu130 (PEP 440 ignores the local label of candidates).
TORCH_REQUIREMENT = f"torch=={torch.__version__.split('+')[0]}"

setup(
    install_requires=[TORCH_REQUIREMENT, "numpy", "tqdm", "matplotlib", "scikit-learn", "scipy", "pillow", "pyyaml"],
    ext_modules=[] if os.environ.get("SPARSEMASK_SKIP_EXT") == "1" else [_extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
