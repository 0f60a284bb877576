"""The shared libraries that ONNX Runtime's CUDA provider links and the dynamic loader cannot
find. The GPU image's build runs `python -m service.runtime.cuda_libraries` and fails on any:
an image whose CUDA or cuDNN major differs from onnxruntime-gpu's would otherwise build, list
CUDAExecutionProvider, and serve on the CPU on every GPU node."""

from __future__ import annotations

import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

PROVIDER_LIBRARY = "libonnxruntime_providers_cuda.so"
DRIVER_LIBRARIES = frozenset({"libcuda.so.1"})
"""The NVIDIA driver's libraries: the container runtime mounts them from the host at run time."""


def cuda_provider_library() -> Path | None:
    """The CUDA provider of the installed onnxruntime package; None where it has none (the CPU
    wheel). Found without importing onnxruntime, which loads no provider anyway."""
    spec = find_spec("onnxruntime")
    if spec is None or spec.origin is None:
        return None
    library = Path(spec.origin).parent / "capi" / PROVIDER_LIBRARY
    return library if library.is_file() else None


def not_found(ldd_output: str) -> list[str]:
    """The libraries `ldd` reports as `NAME => not found`, less the driver's."""
    missing = []
    for line in ldd_output.splitlines():
        name, arrow, target = line.strip().partition(" => ")
        if arrow and target.strip() == "not found" and name not in DRIVER_LIBRARIES:
            missing.append(name)
    return missing


def unresolved_libraries(library: Path) -> list[str]:
    done = subprocess.run(
        ["ldd", str(library)], capture_output=True, text=True, check=True, timeout=60
    )
    return not_found(done.stdout)


def main() -> int:
    library = cuda_provider_library()
    if library is None:
        print(f"{PROVIDER_LIBRARY}: not installed (is onnxruntime-gpu installed?)", file=sys.stderr)
        return 1
    missing = unresolved_libraries(library)
    if missing:
        print(f"{library} links libraries this system lacks: {', '.join(missing)}", file=sys.stderr)
        return 1
    print(f"{library}: every library it links resolves (the driver's libcuda.so.1 aside)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
