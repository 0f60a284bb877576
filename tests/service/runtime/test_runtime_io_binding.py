"""OnnxClassifier's IO-binding path and CUDA provider choice, proven on the CPU provider.

The IO-binding code path is the one CUDA serving uses; here it runs on the CPU provider and must
give exactly what plain `session.run` gives, for any batch size and from many threads at once.
The CUDA provider options are checked as a list (onnxruntime monkeypatched to report CUDA),
without creating a CUDA session. What only a GPU can prove is listed in docs/gpu.md.
"""

from __future__ import annotations

import ctypes
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np
import onnxruntime as ort
import pytest
from modelkit import colour_model

from service.repository.loading import _warm_batch_sizes
from service.runtime import classifier as runtime
from service.runtime.classifier import (
    CPU,
    CUDA,
    OnnxClassifier,
    PinnedBatch,
    choose_providers,
    cuda_provider_options,
    io_binding_enabled,
)
from service.settings import ServiceSettings

SIZE = (16, 16)


def classifier(io_binding: bool | None, instances: int = 2) -> OnnxClassifier:
    settings = ServiceSettings(io_binding=io_binding, use_cuda=False)
    return OnnxClassifier(colour_model(SIZE, sharpness=0.05), SIZE, 3, settings, instances)


def batch(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *SIZE, 3), dtype=np.uint8)


def reference(images: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(colour_model(SIZE, sharpness=0.05), providers=[CPU])
    return np.asarray(session.run(None, {"image": images})[0], dtype=np.float32)


# --- the flag ---------------------------------------------------------------------------------


def test_io_binding_defaults_on_with_cuda_and_off_on_cpu() -> None:
    assert io_binding_enabled(ServiceSettings(), on_gpu=True) is True
    assert io_binding_enabled(ServiceSettings(), on_gpu=False) is False
    assert io_binding_enabled(ServiceSettings(io_binding=False), on_gpu=True) is False
    assert io_binding_enabled(ServiceSettings(io_binding=True), on_gpu=False) is True


def test_io_binding_flag_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROOST_IO_BINDING", "true")
    assert ServiceSettings().io_binding is True
    monkeypatch.setenv("ROOST_IO_BINDING", "false")
    assert ServiceSettings().io_binding is False
    monkeypatch.delenv("ROOST_IO_BINDING")
    assert ServiceSettings().io_binding is None


def test_flag_off_and_on_choose_the_path() -> None:
    plain, bound, auto = classifier(False), classifier(True), classifier(None)
    assert not plain.io_binding and all(s.binding is None for s in plain._slots)
    assert bound.io_binding and all(s.binding is not None for s in bound._slots)
    assert bound._wide is not None and bound._wide.binding is not None
    assert not auto.io_binding  # auto on the CPU provider: off


# --- same answers as session.run --------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 7, 32])
def test_bound_run_equals_plain_run(n: int) -> None:
    images = batch(n, seed=n)
    expected = reference(images)
    plain, bound = classifier(False), classifier(True)
    for alone in (False, True):
        got_bound = bound.run(images, alone)
        got_plain = plain.run(images, alone)
        assert got_bound.dtype == np.float32 and got_bound.shape == (n, 3)
        np.testing.assert_array_equal(got_bound, expected)
        np.testing.assert_array_equal(got_plain, expected)


def test_bound_run_changes_batch_size_between_runs() -> None:
    """A bound output keeps its last shape unless rebound; every size must still work."""
    bound = classifier(True, instances=1)
    for n in [4, 1, 9, 2, 9, 1]:
        images = batch(n, seed=100 + n)
        np.testing.assert_array_equal(bound.run(images), reference(images))


def test_bound_run_accepts_a_non_contiguous_batch() -> None:
    images = batch(6, seed=3)[::2]  # a strided view, as a slice of a larger stack would be
    assert not images.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(classifier(True).run(images), reference(images))


def test_warm_up_runs_every_session_through_the_binding() -> None:
    bound = classifier(True, instances=3)
    bound.warm_up([1, 4])
    images = batch(4, seed=9)
    np.testing.assert_array_equal(bound.run(images), reference(images))


# --- threads ----------------------------------------------------------------------------------


@pytest.mark.parametrize("io_binding", [True, False])
def test_concurrent_runs_each_get_their_own_answer(io_binding: bool) -> None:
    """Many threads, more than sessions, mixed sizes and `alone` flags: no answer is mixed up."""
    bound = classifier(io_binding, instances=3)
    jobs = [(batch(1 + i % 5, seed=i), i % 4 == 0) for i in range(160)]
    expected = [reference(images) for images, _ in jobs]
    with ThreadPoolExecutor(12) as pool:
        got = list(pool.map(lambda job: bound.run(*job), jobs))
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_array_equal(g, e)


# --- the staged (CUDA) input path, run on the CPU ---------------------------------------------


class FakeCudart:
    """Stands in for the CUDA runtime: 'pinned' memory is ordinary ctypes memory."""

    name = "fake"

    def __init__(self) -> None:
        self.live: dict[int, ctypes.Array[ctypes.c_char]] = {}
        self.allocated: list[int] = []

    def host_alloc(self, nbytes: int) -> int:
        buffer = ctypes.create_string_buffer(nbytes)
        address = ctypes.addressof(buffer)
        self.live[address] = buffer
        self.allocated.append(nbytes)
        return address

    def free_host(self, address: int) -> None:
        del self.live[address]


def test_staged_input_path_copies_through_the_pinned_buffer() -> None:
    """The CUDA path (pinned buffer -> OrtValue -> bound input), with device 'cpu'."""
    bound = classifier(True, instances=2)
    fake = FakeCudart()
    bound._stage_input, bound._cudart = True, fake  # type: ignore[assignment]
    bound.warm_up([1, 8])  # reserves an 8-image buffer per session (2 narrow + 1 wide)
    image_bytes = SIZE[0] * SIZE[1] * 3
    assert fake.allocated == [8 * image_bytes] * 3
    for n in [8, 3, 1]:
        images = batch(n, seed=50 + n)
        np.testing.assert_array_equal(bound.run(images), reference(images))
    images = batch(11, seed=11)  # larger than reserved: the buffer grows
    np.testing.assert_array_equal(bound.run(images), reference(images))
    assert fake.allocated[-1] == 11 * image_bytes
    with ThreadPoolExecutor(6) as pool:
        jobs = [batch(1 + i % 8, seed=i) for i in range(40)]
        for images, got in zip(jobs, pool.map(bound.run, jobs), strict=True):
            np.testing.assert_array_equal(got, reference(images))


def test_pinned_batch_is_freed_with_its_owner() -> None:
    fake = FakeCudart()
    pinned = PinnedBatch(fake, 4, (2, 2, 3))  # type: ignore[arg-type]
    view = pinned.holding(np.full((3, 2, 2, 3), 7, dtype=np.uint8))
    assert view.shape == (3, 2, 2, 3) and int(view.sum()) == 7 * 36
    assert len(fake.live) == 1
    del view, pinned
    assert fake.live == {}


def test_no_cuda_runtime_on_this_machine_means_no_pinning() -> None:
    bound = classifier(True)
    assert bound._cudart is None and bound._stage_input is False
    bound.reserve(32)  # no-op without a CUDA runtime
    assert all(s.staging is None for s in bound._slots)


# --- CUDA provider options, without a CUDA session --------------------------------------------


@pytest.fixture
def cuda_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime.ort, "get_available_providers", lambda: [CUDA, CPU])


@pytest.mark.usefixtures("cuda_reported")
def test_providers_for_serving_on_cuda() -> None:
    providers = choose_providers(ServiceSettings())
    assert providers == [
        (
            CUDA,
            {
                "device_id": "0",
                "cudnn_conv_algo_search": "EXHAUSTIVE",
                "arena_extend_strategy": "kSameAsRequested",
                "do_copy_in_default_stream": "1",
                "cudnn_conv_use_max_workspace": "1",
            },
        ),
        CPU,
    ]


@pytest.mark.usefixtures("cuda_reported")
def test_provider_options_follow_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "ROOST_CUDA_DEVICE_ID": "1",
        "ROOST_CUDNN_CONV_ALGO_SEARCH": "HEURISTIC",
        "ROOST_CUDA_ARENA_EXTEND_STRATEGY": "kNextPowerOfTwo",
        "ROOST_CUDA_MEM_LIMIT_BYTES": str(8 << 30),
        "ROOST_CUDA_COPY_IN_DEFAULT_STREAM": "false",
        "ROOST_CUDNN_CONV_USE_MAX_WORKSPACE": "false",
        "ROOST_CUDA_PREFER_NHWC": "true",
    }.items():
        monkeypatch.setenv(name, value)
    (name, options), cpu = choose_providers(ServiceSettings())
    assert (name, cpu) == (CUDA, CPU)
    assert options == {
        "device_id": "1",
        "cudnn_conv_algo_search": "HEURISTIC",
        "arena_extend_strategy": "kNextPowerOfTwo",
        "gpu_mem_limit": str(8 << 30),
        "do_copy_in_default_stream": "0",
        "cudnn_conv_use_max_workspace": "0",
        "prefer_nhwc": "1",
    }
    assert all(isinstance(v, str) for v in options.values())  # what onnxruntime accepts


def test_provider_option_values_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROOST_CUDNN_CONV_ALGO_SEARCH", "FASTEST")
    with pytest.raises(ValueError):
        ServiceSettings()


@pytest.mark.usefixtures("cuda_reported")
def test_cuda_off_by_setting_leaves_the_cpu() -> None:
    assert choose_providers(ServiceSettings(use_cuda=False)) == [CPU]


def test_cpu_only_onnxruntime_gets_the_cpu() -> None:
    assert choose_providers(ServiceSettings(use_cuda=False)) == [CPU]
    if CUDA not in ort.get_available_providers():  # a CPU-only onnxruntime, as in CI
        assert choose_providers(ServiceSettings()) == [CPU]
    assert cuda_provider_options(ServiceSettings())["device_id"] == "0"


# --- warm-up shapes ---------------------------------------------------------------------------


def test_warm_up_shapes_every_batch_size_on_gpu_and_the_ends_on_cpu() -> None:
    gpu = SimpleNamespace(on_gpu=True)
    assert _warm_batch_sizes(gpu, 8) == [1, 2, 3, 4, 5, 6, 7, 8]  # type: ignore[arg-type]
    assert _warm_batch_sizes(gpu, 1) == [1]  # type: ignore[arg-type]
    # On the CPU: the smallest and the largest batch the classifier will be given.
    wide = SimpleNamespace(on_gpu=False, batch_limit=lambda size: size)
    capped = SimpleNamespace(on_gpu=False, batch_limit=lambda size: min(size, 4))
    assert _warm_batch_sizes(wide, 32) == [1, 32]  # type: ignore[arg-type]
    assert _warm_batch_sizes(capped, 32) == [1, 4]  # type: ignore[arg-type]
    assert _warm_batch_sizes(capped, 1) == [1]  # type: ignore[arg-type]


def test_two_cuda_sessions_by_default_so_copy_and_compute_overlap() -> None:
    assert ServiceSettings().cuda_instances == 2


# --- on a GPU only ----------------------------------------------------------------------------


@pytest.mark.gpu
def test_cuda_io_binding_matches_the_cpu() -> None:
    """Runs on the GPU machine (bench/gpu/run.sh): CUDA sessions, pinned staging, IO binding."""
    assert CUDA in ort.get_available_providers(), "needs onnxruntime-gpu"
    settings = ServiceSettings()  # io_binding auto: on with CUDA
    gpu = OnnxClassifier(colour_model(SIZE, sharpness=0.05), SIZE, 3, settings)
    assert gpu.on_gpu, f"CUDA provider listed but not active: {gpu.providers}"
    assert gpu.io_binding and gpu.instances == settings.cuda_instances and gpu._wide is None
    # Each CUDA session keeps its own stream: no weight sharing between them.
    assert not gpu.shares_weights and gpu.session_count == settings.cuda_instances
    gpu.warm_up(range(1, 9))
    assert gpu._cudart is not None, "no CUDA runtime library found for pinned buffers"
    assert all(s.staging is not None and s.staging.capacity == 8 for s in gpu._slots)
    for n in (1, 3, 8, 20):
        images = batch(n, seed=n)
        assert_same_answers(gpu.run(images), reference(images))
    jobs = [batch(1 + i % 8, seed=i) for i in range(64)]
    with ThreadPoolExecutor(8) as pool:
        for images, got in zip(jobs, pool.map(gpu.run, jobs), strict=True):
            assert_same_answers(got, reference(images))


def assert_same_answers(cuda: np.ndarray, cpu: np.ndarray) -> None:
    """CUDA's kernels (TF32 maths by default in ONNX Runtime's CUDA provider, other reduction
    orders) are not bitwise the CPU's: the first H100 run differed by 4.9e-5 in a probability.
    The same rows, probabilities within 2e-4, the same top-1 where the CPU's is not a near tie."""
    assert cuda.shape == cpu.shape
    top2 = np.sort(cpu, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 1e-3
    np.testing.assert_array_equal(cuda.argmax(axis=1)[clear], cpu.argmax(axis=1)[clear])
    np.testing.assert_allclose(cuda, cpu, rtol=1e-3, atol=2e-4)
