"""The GPU image's build check: a library whose linked libraries do not all resolve fails it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from service.runtime import cuda_libraries

LDD_OF_A_CUDA_12_BASE = """\
\tlinux-vdso.so.1 (0x00007ffc4a1f2000)
\tlibcublasLt.so.13 => not found
\tlibcublas.so.13 => not found
\tlibcuda.so.1 => not found
\tlibcudart.so.13 => not found
\tlibcudnn.so.9 => /usr/lib/x86_64-linux-gnu/libcudnn.so.9 (0x00007f2b5c000000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f2b5be1f000)
"""


def test_not_found_names_each_missing_library_but_the_driver() -> None:
    assert cuda_libraries.not_found(LDD_OF_A_CUDA_12_BASE) == [
        "libcublasLt.so.13",
        "libcublas.so.13",
        "libcudart.so.13",
    ]


def test_not_found_is_empty_when_everything_resolves() -> None:
    resolved = LDD_OF_A_CUDA_12_BASE.replace("not found", "/usr/local/cuda/lib64/x.so (0x1)")
    assert cuda_libraries.not_found(resolved) == []


def _library_linking(tmp_path: Path, dependency: str) -> Path:
    """A real shared library that links `lib{dependency}.so`, which is then removed."""
    (tmp_path / "dep.c").write_text("int dep(void) { return 1; }\n")
    (tmp_path / "top.c").write_text("int dep(void);\nint top(void) { return dep(); }\n")
    soname = f"lib{dependency}.so.13"
    subprocess.run(
        [
            "gcc",
            "-shared",
            "-fPIC",
            f"-Wl,-soname,{soname}",
            "-o",
            str(tmp_path / soname),
            str(tmp_path / "dep.c"),
        ],
        check=True,
    )
    (tmp_path / f"lib{dependency}.so").symlink_to(soname)
    top = tmp_path / "libtop.so"
    subprocess.run(
        [
            "gcc",
            "-shared",
            "-fPIC",
            "-o",
            str(top),
            str(tmp_path / "top.c"),
            "-Wl,--no-as-needed",
            f"-L{tmp_path}",
            f"-l{dependency}",
        ],
        check=True,
    )
    (tmp_path / soname).unlink()
    return top


def test_a_real_library_with_a_removed_dependency_is_reported(tmp_path: Path) -> None:
    top = _library_linking(tmp_path, "roostfakecudart")
    assert cuda_libraries.unresolved_libraries(top) == ["libroostfakecudart.so.13"]


def test_the_cpu_wheel_has_no_cuda_provider_and_the_check_fails(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The test environment installs onnxruntime (CPU); the gpu install shape's venv is checked
    # in tests/test_install_shapes.py.
    assert cuda_libraries.cuda_provider_library() is None
    assert cuda_libraries.main() == 1
    assert "not installed" in capsys.readouterr().err
