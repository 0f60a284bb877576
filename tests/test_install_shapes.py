"""The install shapes of pyproject.toml, each installed with plain pip from the project's wheel
into a fresh virtualenv, then used as a user would: `client`, `cpu`, `gpu` and `train`.

A shape that pulls in a package it must not have (a second ONNX Runtime wheel, the server in
the client), lacks a module one of its commands imports, or ships without a data file the
server reads fails here, where the repository's own .venv (which has every extra) cannot
tell. The wheel is built from a copy of the sources and the virtualenvs live in pytest's
temporary directory, so a run leaves the checkout as it was.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from servers import LoopbackProcess, RoostServer, free_port
from skimage import data as photos

sys.path.insert(0, str(Path(__file__).parent / "training"))
from photo_data import make_photo_dataset  # noqa: E402

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
MODEL_REPO = ROOT / "model_repo"
SOURCES = ("pyproject.toml", "README.md", "roost", "service", "training")
INSTALL_TIMEOUT_S = {"train": 900}
"""Seconds for `pip install` of a shape (600 unless named)."""
ONNXRUNTIME_WHEELS = {
    "onnxruntime",
    "onnxruntime-gpu",
    "onnxruntime-directml",
    "onnxruntime-openvino",
    "onnxruntime-qnn",
    "onnxruntime-rocm",
    "onnxruntime-training",
}
"""Distributions that each install the `onnxruntime` package: a shape may have one at most."""
CATS = {"Egyptian cat", "tiger cat", "tabby"}
"""What the shipped ImageNet model (the repository's default) answers for chelsea (its top three)."""


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


class Venv:
    """A fresh virtualenv; its commands run from a folder outside the checkout (`python -m`
    would otherwise import the checkout's packages) without this process's virtualenv."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.bin = path / "bin"
        self.python = str(self.bin / "python")
        self.cwd = path.parent / f"{path.name}-work"
        self.cwd.mkdir()
        run([sys.executable, "-m", "venv", str(path)], timeout=300, cwd=self.cwd)
        drop = {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP"}
        self.env = {k: v for k, v in os.environ.items() if k not in drop}
        self.env.update(
            VIRTUAL_ENV=str(path),
            PATH=f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}",
            PIP_DISABLE_PIP_VERSION_CHECK="1",
            PIP_PROGRESS_BAR="off",
        )

    def run(
        self, *argv: str, timeout: float = 300, check: bool = True, **env: str
    ) -> subprocess.CompletedProcess[str]:
        """`argv` in the virtualenv (`roost`, `python`: its own); exit 0 unless not `check`."""
        program = self.bin / argv[0]
        command = [str(program) if program.exists() else argv[0], *argv[1:]]
        return run(command, timeout=timeout, cwd=self.cwd, env={**self.env, **env}, check=check)

    def distributions(self) -> set[str]:
        """The canonical names of what `pip list` shows."""
        listed = json.loads(self.run("python", "-m", "pip", "list", "--format=json").stdout)
        return {canonical(d["name"]) for d in listed}

    def onnxruntime_wheels(self) -> set[str]:
        return self.distributions() & ONNXRUNTIME_WHEELS

    def serve(self, log_path: Path, **env: str) -> LoopbackProcess:
        """`roost serve` on a free port of 127.0.0.1 with the shipped model repository, once
        /readyz answers 200."""
        port = free_port()
        settings = {
            "ROOST_HOST": "127.0.0.1",
            "ROOST_PORT": str(port),
            "ROOST_MODEL_REPO": str(MODEL_REPO),
            "ROOST_POLL_INTERVAL_S": "0",
            **env,
        }
        server = LoopbackProcess(
            [str(self.bin / "roost"), "serve"], port, log_path, {**self.env, **settings}
        )
        try:
            server.wait_for(
                lambda: server.client.get("/readyz", timeout=2).status_code == 200, 120, "ready"
            )
        except BaseException:
            server.stop()
            raise
        return server


def run(
    command: list[str],
    timeout: float,
    cwd: Path,
    env: dict[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env
    )
    if check and done.returncode != 0:
        pytest.fail(
            f"{' '.join(command)} exited {done.returncode}\n"
            f"stdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-4000:]}",
            pytrace=False,
        )
    return done


def timed(what: str, started: float) -> None:
    """The seconds since `started`, for `pytest -s` (the report of a run names them)."""
    print(f"{what}: {time.monotonic() - started:.1f} s")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built from a copy of the sources (no build/ or egg-info in the
    checkout)."""
    started = time.monotonic()
    base = tmp_path_factory.mktemp("wheel")
    source = base / "source"
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(
                ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
            )
        else:
            shutil.copy2(ROOT / name, source / name)
    built = base / "dist"
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_PROGRESS_BAR": "off"}
    run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(built), str(source)],
        timeout=600,
        cwd=base,
        env=env,
    )
    (path,) = built.glob("roost-*.whl")
    timed("wheel", started)
    return path


def install(shape: str, wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Venv:
    """A fresh virtualenv with `roost[shape]` from `wheel`."""
    started = time.monotonic()
    venv = Venv(tmp_path_factory.mktemp(f"venv-{shape}") / "venv")
    venv.run(
        "python", "-m", "pip", "install", f"{wheel}[{shape}]",
        timeout=INSTALL_TIMEOUT_S.get(shape, 600),
    )  # fmt: skip
    timed(f"{shape}: venv and install", started)
    location = venv.run("python", "-c", "import roost; print(roost.__file__)").stdout
    assert Path(location.strip()).is_relative_to(venv.path), location  # not the checkout's
    return venv


def chelsea_jpeg(path: Path) -> Path:
    Image.fromarray(photos.chelsea()).save(path, quality=90)
    return path


def classify_over_http(server: LoopbackProcess, image: Path) -> dict:
    answer = server.client.post(
        "/v1/classify", files={"file": (image.name, image.read_bytes(), "image/jpeg")}
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def assert_serves_chelsea(venv: Venv, image: Path, log_path: Path, **env: str) -> str:
    """`roost serve` in `venv` answers /v1/classify with the ImageNet model and exits 0 on
    SIGTERM; returns its log."""
    server = venv.serve(log_path, **env)
    try:
        body = classify_over_http(server, image)
    finally:
        server.stop()  # SIGTERM; killed (and failing below) after 20 s
    assert server.process.returncode == 0, server.log()[-3000:]
    assert (body["model"], body["version"]) == ("imagenet", 2)
    (result,) = body["results"]
    assert result["filename"] == image.name
    assert result["predictions"][0]["label"] in CATS
    return server.log()


def test_client_shape(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """`roost[client]`: RoostClient and `roost classify` against a real server, and nothing
    of the server's; `roost serve` names the extra it needs."""
    venv = install("client", wheel, tmp_path_factory)
    started = time.monotonic()
    installed = venv.distributions()
    assert {"httpx", "tqdm", "roost"} <= installed
    unwanted = {"onnxruntime", "onnxruntime-gpu", "fastapi", "uvicorn", "starlette"}
    unwanted |= {"tensorflow", "tensorflow-cpu", "keras", "onnx"}
    assert not installed & unwanted

    venv.run("python", "-c", "from roost.client import RoostClient, AsyncRoostClient")
    helped = venv.run("roost", "classify", "--help")
    assert "--concurrency" in helped.stdout

    serve = venv.run("roost", "serve", check=False)
    assert serve.returncode == 2, serve.stderr
    assert "roost[cpu]" in serve.stderr and "'uvicorn' is missing" in serve.stderr

    work = tmp_path_factory.mktemp("client")
    image = chelsea_jpeg(work / "chelsea.jpg")
    server = RoostServer(MODEL_REPO, work / "server.log")  # the checkout's .venv serving
    try:
        server.wait_ready()
        table = venv.run("roost", "classify", str(image), "--url", server.url, "--top-k", "3")
        listed = venv.run(
            "roost", "classify", str(image), "--url", server.url, "--top-k", "3", "--csv", "-"
        )
    finally:
        server.stop()
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["path", "model", "version", "predictions"]
    assert len(lines) == 2 and lines[1].startswith(str(image)), table.stdout
    rows = list(csv.reader(io.StringIO(listed.stdout)))
    assert rows[0] == [
        "path", "model", "version", "label_1", "score_1", "label_2", "score_2",
        "label_3", "score_3", "error",
    ]  # fmt: skip
    assert len(rows) == 2 and rows[1][:3] == [str(image), "imagenet", "2"]
    assert rows[1][3] in CATS and rows[1][-1] == ""
    assert 1.0 >= float(rows[1][4]) >= float(rows[1][6]) >= float(rows[1][8]) >= 0.0
    timed("client: commands", started)


def test_cpu_shape(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """`roost[cpu]`: the CPU ONNX Runtime only; `roost serve` serves the shipped repository
    and exits 0 on SIGTERM; `roost classify` names the client extra."""
    venv = install("cpu", wheel, tmp_path_factory)
    started = time.monotonic()
    assert venv.onnxruntime_wheels() == {"onnxruntime"}
    installed = venv.distributions()
    assert {"fastapi", "uvicorn", "pydantic-settings", "python-multipart"} <= installed
    assert not installed & {"tensorflow", "tensorflow-cpu", "httpx", "nvidia-ml-py"}

    work = tmp_path_factory.mktemp("cpu")
    image = chelsea_jpeg(work / "chelsea.jpg")
    log = assert_serves_chelsea(venv, image, work / "serve.log")
    assert "on CPUExecutionProvider" in log

    # The parser is argparse only (roost/client/command.py): --help works without the extra;
    # classifying needs httpx, which only `client` brings.
    assert "--concurrency" in venv.run("roost", "classify", "--help").stdout
    classify = venv.run("roost", "classify", str(image), check=False)
    assert classify.returncode == 2, classify.stderr
    assert "roost[client]" in classify.stderr and "'httpx' is missing" in classify.stderr
    timed("cpu: commands", started)


def test_gpu_shape(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """`roost[gpu]`: onnxruntime-gpu and not the CPU wheel, the CUDA provider listed, the GPU
    image's library check agreeing with ldd, and serving on the CPU provider without CUDA."""
    venv = install("gpu", wheel, tmp_path_factory)
    started = time.monotonic()
    assert venv.onnxruntime_wheels() == {"onnxruntime-gpu"}
    assert {"nvidia-ml-py", "fastapi", "uvicorn"} <= venv.distributions()
    providers = venv.run(
        "python", "-c", "import onnxruntime, pynvml; print(onnxruntime.get_available_providers())"
    )
    assert "CUDAExecutionProvider" in providers.stdout

    # service.runtime.cuda_libraries (the GPU image's build check) fails, naming each library
    # the CUDA provider links that the loader cannot find. Which ones depends on the machine's
    # CUDA (here /usr/local/cuda-13.0 resolves libcudart.so.13, not cuBLAS or cuRAND), so ldd
    # says what to expect; the driver's libcuda.so.1 never counts.
    library = Path(
        venv.run(
            "python",
            "-c",
            "from service.runtime.cuda_libraries import cuda_provider_library as c; print(c())",
        ).stdout.strip()
    )
    assert library.name == "libonnxruntime_providers_cuda.so" and library.is_relative_to(venv.path)
    ldd = run(["ldd", str(library)], timeout=60, cwd=venv.cwd).stdout
    missing = [
        line.split(" => ")[0].strip()
        for line in ldd.splitlines()
        if line.strip().endswith("=> not found") and "libcuda.so.1" not in line
    ]
    check = venv.run("python", "-m", "service.runtime.cuda_libraries", check=False)
    if missing:
        assert check.returncode == 1, check.stdout + check.stderr
        assert "links libraries this system lacks" in check.stderr
        named = check.stderr.rpartition(": ")[2].strip().split(", ")
        assert named == missing, (check.stderr, ldd)
    else:  # a machine with CUDA 13, cuBLAS, cuRAND and cuDNN 9 on the loader's path
        assert check.returncode == 0, check.stderr

    work = tmp_path_factory.mktemp("gpu")
    image = chelsea_jpeg(work / "chelsea.jpg")
    log = assert_serves_chelsea(venv, image, work / "serve.log", ROOST_USE_CUDA="false")
    assert "imagenet version 2 on CPUExecutionProvider" in log
    assert "CUDAExecutionProvider" not in log
    timed("gpu: commands", started)


def write_idx(path: Path, array: np.ndarray, header: int) -> None:
    with gzip.open(path, "wb") as handle:
        handle.write(b"\0" * header + array.tobytes())


def test_train_shape(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """`roost[train]`: TensorFlow's CPU build and the CPU ONNX Runtime; train, evaluate,
    export, quantize, profile, compare and datasets, on tiny inputs, offline."""
    venv = install("train", wheel, tmp_path_factory)
    installed = venv.distributions()
    linux_x86 = sys.platform == "linux" and platform.machine() == "x86_64"
    assert ("tensorflow-cpu" if linux_x86 else "tensorflow") in installed
    if linux_x86:
        assert "tensorflow" not in installed
    assert venv.onnxruntime_wheels() == {"onnxruntime"}
    # onnxruntime[quantization,symbolic] (roost quantize's pre-processing)
    assert {"keras", "tf2onnx", "onnx", "sympy", "ml-dtypes", "scikit-image"} <= installed

    work = tmp_path_factory.mktemp("train")
    data = make_photo_dataset(work / "data", per_class=12, size=48)
    run_dir, repo = work / "runs" / "photos", work / "repo"

    started = time.monotonic()
    trained = venv.run(
        "roost", "train", "--data", str(data), "--out", str(run_dir),
        "--backbone", "minivggnet", "--image-size", "32", "--epochs", "2",
        "--batch-size", "8", "--verbose", "0", "--seed", "7",
        timeout=600,
    )  # fmt: skip
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["backbone"] == "minivggnet" and summary["classes"] == [
        "chelsea", "coffee", "rocket",
    ]  # fmt: skip
    assert (run_dir / "model.keras").is_file() and "test accuracy" in trained.stdout
    timed("train: roost train", started)

    started = time.monotonic()
    for name in ("classification_report.txt", "confusion_matrix.png"):
        (run_dir / name).unlink()
    evaluated = venv.run("roost", "evaluate", str(run_dir), timeout=600)
    assert (run_dir / "classification_report.txt").read_text().startswith("test split\n")
    assert (run_dir / "confusion_matrix.png").is_file() and "test accuracy" in evaluated.stdout
    timed("train: roost evaluate", started)

    started = time.monotonic()
    venv.run("roost", "export", str(run_dir), "--repo", str(repo), "--name", "photos", timeout=600)
    card = json.loads((repo / "photos" / "1" / "card.json").read_text())
    assert (repo / "photos" / "1" / "model.onnx").is_file()
    assert (card["name"], card["version"], card["precision"]) == ("photos", 1, "fp32")
    timed("train: roost export", started)

    started = time.monotonic()
    more = make_photo_dataset(work / "more", per_class=60, size=48, seed=3)  # >= 50 to check
    quantized = venv.run(
        "roost", "quantize", "photos:1", "--repo", str(repo), "--images", str(more),
        "--force",  # a tiny, briefly trained net: publish whatever the gate says
        timeout=600,
    )  # fmt: skip
    assert quantized.stdout.strip().splitlines()[-1] == str(repo / "photos" / "2")
    card = json.loads((repo / "photos" / "2" / "card.json").read_text())
    assert card["precision"] == "int8" and card["quantization"]["from_version"] == 1
    assert (repo / "photos" / "2" / "model.onnx").is_file()
    timed("train: roost quantize", started)

    started = time.monotonic()
    venv.run(
        "roost", "profile", "photos:2", str(data), "--repo", str(repo),
        "--source", "install-shape test",
    )  # fmt: skip
    profile = json.loads((repo / "photos" / "2" / "card.json").read_text())["prediction_profile"]
    assert profile["source"] == "install-shape test" and profile["images"] == 36
    assert sum(profile["predicted_counts"]) == 36
    timed("train: roost profile", started)

    started = time.monotonic()
    table = work / "comparison.md"
    venv.run("roost", "compare", str(run_dir), "--out", str(table), "--repeats", "3")
    lines = table.read_text().splitlines()
    assert lines[0].startswith("| rank | run | backbone |") and len(lines) == 3
    assert lines[2].startswith("| 1 | photos | minivggnet | 32x32 |")
    timed("train: roost compare", started)

    # `roost datasets` on tiny stand-ins for the Debian packages' files (the same layout).
    started = time.monotonic()
    idx = work / "fashion-idx"
    idx.mkdir()
    rng = np.random.default_rng(0)
    for prefix, count in (("train", 100), ("t10k", 30)):
        images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        write_idx(idx / f"{prefix}-images-idx3-ubyte.gz", images, 16)
        labels = (np.arange(count) % 10).astype(np.uint8)
        write_idx(idx / f"{prefix}-labels-idx1-ubyte.gz", labels, 8)
    fashion = work / "fashion"
    venv.run(
        "roost", "datasets", "fashion-mnist", str(fashion), "--source", str(idx),
        "--train-per-class", "5", "--val-per-class", "2", "--test-per-class", "2",
    )  # fmt: skip
    for split, per_class in (("train", 5), ("val", 2), ("test", 2)):
        assert len(list((fashion / split).rglob("*.png"))) == 10 * per_class
    stamps = work / "stamps"
    for sub in ("animals/birds", "animals/mammals", "animals/fish", "animals/insects"):
        (stamps / sub).mkdir(parents=True)
        Image.new("RGBA", (30, 20), (200, 0, 0, 255)).save(stamps / sub / "photo.png")
    for sub in ("plants/flowers", "food/fruit", "food/vegetables"):
        (stamps / sub).mkdir(parents=True)
        Image.new("RGBA", (20, 30), (0, 200, 0, 128)).save(stamps / sub / "photo.png")
    tux = work / "tux"
    venv.run("roost", "datasets", "tuxpaint", str(tux), "--stamps", str(stamps))
    assert len(list(tux.rglob("*.png"))) == 7
    assert Image.open(tux / "birds" / "photo.png").mode == "RGB"
    timed("train: roost datasets", started)
