"""ONNX Runtime sessions for one model version: provider choice, I/O checks, warm-up, run."""

from __future__ import annotations

import ctypes
import logging
import queue
import threading
import weakref
from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

import numpy as np
import onnxruntime as ort

from roost.contract.errors import ContractError
from roost.contract.onnx_io import TensorSpec, check_model_io
from service.cpus import usable_cores
from service.runtime.cpu_gate import CpuGate
from service.runtime.cuda import CPU, CUDA, CudaRuntime
from service.settings import ServiceSettings

log = logging.getLogger(__name__)

Provider = str | tuple[str, dict[str, str]]
"""What `ort.InferenceSession(providers=...)` takes: a name, or a name and its options."""


def cuda_provider_options(settings: ServiceSettings) -> dict[str, str]:
    """The CUDA provider's options for serving (ONNX Runtime takes them as strings).

    - `cudnn_conv_algo_search`: EXHAUSTIVE times every cuDNN algorithm on the first run of
      each input shape and keeps the fastest; warm-up runs every batch shape the batcher can
      form (service/repository/loading.py), so no request pays for the search.
    - `arena_extend_strategy` kSameAsRequested: the arena grows by what a run asks for, not to
      the next power of two, so GPU memory stays near what the warmed shapes need.
    - `do_copy_in_default_stream`: copies on the compute stream, ONNX Runtime's safe default.
    - `cudnn_conv_use_max_workspace`: lets cuDNN pick its fastest, workspace-hungry kernels.
    """
    options = {
        "device_id": str(settings.cuda_device_id),
        "cudnn_conv_algo_search": settings.cudnn_conv_algo_search,
        "arena_extend_strategy": settings.cuda_arena_extend_strategy,
        "do_copy_in_default_stream": "1" if settings.cuda_copy_in_default_stream else "0",
        "cudnn_conv_use_max_workspace": "1" if settings.cudnn_conv_use_max_workspace else "0",
    }
    if settings.cuda_mem_limit_bytes:
        options["gpu_mem_limit"] = str(settings.cuda_mem_limit_bytes)
    if settings.cuda_prefer_nhwc:
        options["prefer_nhwc"] = "1"
    return options


def choose_providers(settings: ServiceSettings) -> list[Provider]:
    """CUDA (with serving options) first when onnxruntime-gpu sees a GPU and settings allow
    it, CPU always last."""
    available = ort.get_available_providers()
    if settings.use_cuda and CUDA in available:
        return [(CUDA, cuda_provider_options(settings)), CPU]
    return [CPU]


def provider_name(provider: Provider) -> str:
    return provider if isinstance(provider, str) else provider[0]


def io_binding_enabled(settings: ServiceSettings, on_gpu: bool) -> bool:
    """`ROOST_IO_BINDING` when set; otherwise on with CUDA and off on the CPU."""
    return on_gpu if settings.io_binding is None else settings.io_binding


class PinnedBatch:
    """A uint8 host buffer for batches of up to `capacity` images, page-locked when a CUDA
    runtime is given (so the copy to the GPU is one DMA transfer), freed with the object."""

    def __init__(self, cudart: CudaRuntime, capacity: int, image_shape: tuple[int, ...]) -> None:
        nbytes = capacity * int(np.prod(image_shape))
        address = cudart.host_alloc(nbytes)
        self._finalizer = weakref.finalize(self, cudart.free_host, address)
        raw = (ctypes.c_uint8 * nbytes).from_address(address)
        self.array: np.ndarray = np.ctypeslib.as_array(raw).reshape((capacity, *image_shape))
        self.capacity = capacity

    def holding(self, batch: np.ndarray) -> np.ndarray:
        """`batch` copied into the buffer's first rows: a view of this buffer."""
        view = self.array[: len(batch)]
        np.copyto(view, batch)
        return view


@dataclass(eq=False)
class _Slot:
    """One session and what a run on it needs; used by one thread at a time."""

    session: ort.InferenceSession
    binding: ort.IOBinding | None = None
    staging: PinnedBatch | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class OnnxClassifier:
    """ONNX Runtime sessions over one model.onnx; `run` is thread-safe and uses a free session.

    On the CPU it runs up to `instances` batches at once on narrow sessions (cores / instances
    threads, at least one) that do not fight over cores, and holds one wide session using every
    core for a batch that runs alone, so a lone request gets all the cores
    (docs/benchmarks-journal.md).
    On the CPU, given the server's `cpu_gate`, a run waits for room in it (one thread for a
    narrow run, every core for the wide one), so the threads computing stay within the gate's
    width and waiting batches start by their most urgent request's deadline (runtime/cpu_gate.py).
    On CUDA it holds `cuda_instances` sessions (2 by default), so one batch's copy to the GPU
    overlaps another's compute.

    Narrow runs share their weights (`share_weights`): a one-thread session runs each batch on
    the calling thread and `run` is thread-safe in ONNX Runtime, so every narrow slot uses ONE
    such session, and the version holds its weights twice (narrow + wide) instead of
    instances + 1 times. Slots of more than one thread each keep their own session (their
    own thread pool), as do CUDA sessions (their own stream). ONNX Runtime's own sharing does
    not reach these weights from Python (docs/benchmarks-journal.md, "Memory: weights shared between
    sessions").

    With IO binding (`io_binding_enabled`) a batch is bound as the session's input instead of
    being passed to `session.run`: on CUDA it is copied into a pinned host buffer, then once to
    an OrtValue on the GPU (uint8: a quarter of the float bytes), and the output is copied back
    once. On the CPU the same code path binds the numpy batch where it is (docs/gpu.md).

    Raises ContractError from the constructor when the model breaks the repository contract.
    """

    def __init__(
        self,
        model_bytes: bytes,
        image_size: tuple[int, int],
        num_classes: int,
        settings: ServiceSettings,
        instances: int = 0,
        share_weights: bool = True,
        cpu_gate: CpuGate | None = None,
    ) -> None:
        providers = choose_providers(settings)
        wants_gpu = provider_name(providers[0]) == CUDA
        cores = usable_cores()
        # NOTE: twice as many narrow sessions as cores keeps every core busy while a slot's
        # thread, its ONNX Runtime call done, waits for the GIL the event loop holds; one per
        # core leaves cores idle and was not faster (docs/benchmarks-journal.md, "Where a
        # 512 px image's CPU goes" and "The CPU floor as a server").
        self.instances = instances or (settings.cuda_instances if wants_gpu else min(8, 2 * cores))
        narrow_threads = settings.intra_op_threads or max(1, cores // self.instances)
        # False: one session per narrow slot, the layout before sharing (bench/memory.py).
        self.shares_weights = share_weights and not wants_gpu and narrow_threads == 1
        try:
            if self.shares_weights:
                sessions = [_session(model_bytes, providers, settings, 1)] * self.instances
            else:
                sessions = [
                    _session(model_bytes, providers, settings, narrow_threads)
                    for _ in range(self.instances)
                ]
            wide = None
            if not wants_gpu and self.instances > 1 and narrow_threads < cores:
                wide = _session(model_bytes, providers, settings, threads=cores)
        except Exception as exc:  # onnxruntime raises several unrelated types
            raise ContractError(f"model.onnx does not load: {_first_line(exc)}") from None
        check_model_io(
            [TensorSpec.of(arg) for arg in sessions[0].get_inputs()],
            [TensorSpec.of(arg) for arg in sessions[0].get_outputs()],
            image_size,
            num_classes,
        )
        self.providers: list[str] = sessions[0].get_providers()
        if wants_gpu and not self.on_gpu:
            log.warning("CUDA provider requested but ONNX Runtime fell back to %s", self.providers)
        self.image_size = image_size
        self.num_classes = num_classes
        self._input_name = sessions[0].get_inputs()[0].name
        self._output_name = sessions[0].get_outputs()[0].name
        self.io_binding = io_binding_enabled(settings, self.on_gpu)
        # On CUDA the batch is staged (pinned host buffer -> OrtValue on the device); on the
        # CPU the numpy batch is bound where it lies. Tests flip `_stage_input` on the CPU.
        self._device = "cuda" if self.on_gpu else "cpu"
        self._device_id = settings.cuda_device_id if self.on_gpu else 0
        self._stage_input = self.on_gpu
        self._cudart = CudaRuntime.load() if self.on_gpu and self.io_binding else None
        self._slots = [self._slot(s) for s in sessions]
        self._free: queue.SimpleQueue[_Slot] = queue.SimpleQueue()
        for slot in self._slots:
            self._free.put(slot)
        self._wide = self._slot(wide) if wide is not None else None
        self._narrow_threads = narrow_threads
        self._wide_threads = cores
        self.cpu_gate = None if self.on_gpu else cpu_gate
        self._cpu_max_batch_size = settings.cpu_max_batch_size
        if self.on_gpu:
            log.info(
                "%d CUDA session(s) on GPU %d; IO binding %s; pinned host buffers %s",
                self.instances,
                self._device_id,
                "on" if self.io_binding else "off",
                f"from {self._cudart.name}" if self._cudart else "unavailable",
            )

    def _slot(self, session: ort.InferenceSession) -> _Slot:
        return _Slot(session, session.io_binding() if self.io_binding else None)

    @property
    def on_gpu(self) -> bool:
        return self.providers[0] == CUDA

    def batch_limit(self, max_batch_size: int) -> int:
        """The largest batch worth forming: `max_batch_size`, but at most `cpu_max_batch_size`
        on one-thread CPU slots, where a batch takes as long as its images one after another
        (images per CPU-second peak at batch 2-4) and a larger one only makes its first images
        wait for the last (docs/benchmarks-journal.md)."""
        if self.on_gpu or self._narrow_threads > 1:
            return max_batch_size
        return min(max_batch_size, self._cpu_max_batch_size)

    @property
    def session_count(self) -> int:
        """Distinct ONNX Runtime sessions held: each holds its own copy of the weights."""
        slots = [*self._slots, *([self._wide] if self._wide else [])]
        return len({id(slot.session) for slot in slots})

    def run(self, batch: np.ndarray, alone: bool = False, deadline: float = 0.0) -> np.ndarray:
        """Probabilities `[N, C]` for a uint8 `[N, H, W, 3]` batch. Blocks; call from a thread.

        `alone`: no other batch is running or waiting, so the wide session may take every core.
        `deadline`: the earliest deadline among the batch's requests (monotonic), its place in
        the CPU gate's order.
        """
        wide = self._wide
        if alone and wide is not None and wide.lock.acquire(blocking=False):
            try:
                with self._computing(self._wide_threads, deadline):
                    return self._run(wide, batch)
            finally:
                wide.lock.release()
        slot = self._free.get()
        try:
            with self._computing(self._narrow_threads, deadline):
                return self._run(slot, batch)
        finally:
            self._free.put(slot)

    def _computing(self, threads: int, deadline: float) -> AbstractContextManager[None]:
        """Room in the CPU gate for a run of `threads` threads; none without a gate (CUDA)."""
        return nullcontext() if self.cpu_gate is None else self.cpu_gate.hold(threads, deadline)

    def _run(self, slot: _Slot, batch: np.ndarray) -> np.ndarray:
        if slot.binding is not None:
            return self._run_bound(slot, slot.binding, batch)
        (scores,) = slot.session.run([self._output_name], {self._input_name: batch})
        return np.asarray(scores, dtype=np.float32)

    def _run_bound(self, slot: _Slot, binding: ort.IOBinding, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.uint8)
        if self._stage_input:
            host = self._staged(slot, batch)
            value = ort.OrtValue.ortvalue_from_numpy(host, self._device, self._device_id)
            binding.bind_ortvalue_input(self._input_name, value)
        else:
            binding.bind_cpu_input(self._input_name, batch)
        # NOTE: the output is bound per run: a bound output keeps the previous run's shape,
        # and ONNX Runtime refuses a run whose batch size differs from it.
        binding.bind_output(self._output_name, self._device, self._device_id)
        try:
            slot.session.run_with_iobinding(binding)
            (scores,) = binding.copy_outputs_to_cpu()
        finally:
            binding.clear_binding_inputs()  # releases the batch (or its device copy)
            binding.clear_binding_outputs()
        return np.asarray(scores, dtype=np.float32)

    def _staged(self, slot: _Slot, batch: np.ndarray) -> np.ndarray:
        """The batch in the slot's pinned buffer (grown when too small); as it is without one."""
        if self._cudart is None:
            return batch
        if slot.staging is None or slot.staging.capacity < len(batch):
            try:
                slot.staging = PinnedBatch(self._cudart, len(batch), batch.shape[1:])
            except MemoryError as exc:
                log.warning("no pinned host buffer, copying from pageable memory: %s", exc)
                self._cudart = None
                return batch
        return slot.staging.holding(batch)

    def reserve(self, max_batch_size: int) -> None:
        """Size every pinned host buffer for `max_batch_size` images now (no-op without one)."""
        if self._cudart is None:
            return
        height, width = self.image_size
        for slot in [*self._slots, *([self._wide] if self._wide else [])]:
            if slot.staging is None or slot.staging.capacity < max_batch_size:
                slot.staging = PinnedBatch(self._cudart, max_batch_size, (height, width, 3))

    def warm_up(self, batch_sizes: Iterable[int]) -> None:
        """Run every session once per batch size so the first users don't pay for allocation
        (nor, on CUDA, for cuDNN's algorithm search, which is per input shape)."""
        sizes = list(batch_sizes)
        if sizes:
            self.reserve(max(sizes))
        height, width = self.image_size
        for size in sizes:
            dummy = np.zeros((size, height, width, 3), dtype=np.uint8)
            for alone in [False] * self.instances + [True]:
                scores = self.run(dummy, alone)
                if scores.shape != (size, self.num_classes):
                    raise ContractError(
                        f"output shape {list(scores.shape)} for a batch of {size}, "
                        f"expected [{size}, {self.num_classes}]"
                    )


def _session(
    model: bytes, providers: list[Provider], settings: ServiceSettings, threads: int
) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = settings.inter_op_threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_cpu_mem_arena = settings.cpu_mem_arena
    # NOTE: never on CUDA, where the pool threads would spin for the length of a GPU run and
    # take the cores the decode threads need.
    on_cpu = provider_name(providers[0]) != CUDA
    spinning = "1" if settings.intra_op_spinning and on_cpu else "0"
    options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
    options.add_session_config_entry("session.inter_op.allow_spinning", spinning)
    # Spinning, when allowed, only while a run is in progress: the threads stop when the last
    # concurrent run returns instead of spinning on into other threads' time (without this,
    # spinning cost 6 % at 4 clients on the CPU; with it, about 1 %, within the noise).
    options.add_session_config_entry("session.force_spinning_stop", "1")
    return ort.InferenceSession(model, sess_options=options, providers=providers)


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().split("\n")[0][:300]
