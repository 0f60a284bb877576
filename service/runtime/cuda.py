"""ONNX Runtime's provider names and the CUDA runtime through ctypes: what the model sessions
(classifier.py) and GPU decoding (decode/) both need."""

from __future__ import annotations

import ctypes
from typing import Any

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


class CudaRuntime:
    """The few CUDA runtime calls Roost makes itself, through ctypes: pinned host memory and
    stream synchronisation. `load()` is None without a CUDA runtime library (CPU machines)."""

    _NAMES = ("libcudart.so.13", "libcudart.so.12", "libcudart.so")
    _HOST_ALLOC_PORTABLE = 1  # cudaHostAllocPortable: pinned for every CUDA context

    def __init__(self, library: Any, name: str) -> None:
        self._lib = library
        self.name = name

    @classmethod
    def load(cls) -> CudaRuntime | None:
        for name in cls._NAMES:
            try:
                library = ctypes.CDLL(name)
            except OSError:
                continue
            library.cudaHostAlloc.argtypes = [
                ctypes.POINTER(ctypes.c_void_p),
                ctypes.c_size_t,
                ctypes.c_uint,
            ]
            library.cudaFreeHost.argtypes = [ctypes.c_void_p]
            library.cudaStreamSynchronize.argtypes = [ctypes.c_void_p]
            return cls(library, name)
        return None

    def host_alloc(self, nbytes: int) -> int:
        """Page-locked host memory of `nbytes`; its address. Raises MemoryError on failure."""
        pointer = ctypes.c_void_p()
        status = self._lib.cudaHostAlloc(
            ctypes.byref(pointer), ctypes.c_size_t(nbytes), self._HOST_ALLOC_PORTABLE
        )
        if status != 0 or not pointer.value:
            raise MemoryError(f"cudaHostAlloc({nbytes}) failed with CUDA error {status}")
        return int(pointer.value)

    def free_host(self, address: int) -> None:
        self._lib.cudaFreeHost(ctypes.c_void_p(address))

    def synchronize(self, stream: int = 0) -> None:
        status = self._lib.cudaStreamSynchronize(ctypes.c_void_p(stream))
        if status != 0:
            raise RuntimeError(f"cudaStreamSynchronize failed with CUDA error {status}")
