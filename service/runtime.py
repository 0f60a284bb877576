"""ONNX Runtime sessions for one model version: provider choice, I/O checks, warm-up, run."""

from __future__ import annotations

import logging
import os
import queue
from collections.abc import Iterable

import numpy as np
import onnxruntime as ort

from roost.contract.errors import ContractError
from roost.contract.onnx_io import TensorSpec, check_model_io
from service.settings import ServiceSettings

log = logging.getLogger(__name__)


def choose_providers(settings: ServiceSettings) -> list[str]:
    """CUDA first when onnxruntime-gpu sees a GPU and settings allow it, CPU always last."""
    available = ort.get_available_providers()
    if settings.use_cuda and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxClassifier:
    """ONNX Runtime sessions over one model.onnx; `run` is thread-safe and uses a free session.

    On the CPU it holds `instances` narrow sessions (cores / instances threads, at least one)
    that run concurrent batches without fighting over cores, and one wide session using every
    core for a batch that runs alone, so a lone request gets all the cores (docs/benchmarks.md).

    Raises ContractError from the constructor when the model breaks the repository contract.
    """

    def __init__(
        self,
        model_bytes: bytes,
        image_size: tuple[int, int],
        num_classes: int,
        settings: ServiceSettings,
        instances: int = 0,
    ) -> None:
        providers = choose_providers(settings)
        on_gpu = providers[0] == "CUDAExecutionProvider"
        cores = os.cpu_count() or 1
        # NOTE: twice as many narrow sessions as cores keeps every core busy while some
        # sessions wait for decoded images (c=16, 512 px: 127 img/s with 4 on 2 cores, 117 with 2).
        self.instances = instances or (1 if on_gpu else min(8, 2 * cores))
        narrow_threads = settings.intra_op_threads or max(1, cores // self.instances)
        try:
            sessions = [
                _session(model_bytes, providers, settings, narrow_threads)
                for _ in range(self.instances)
            ]
            wide = None
            if not on_gpu and self.instances > 1 and narrow_threads < cores:
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
        self.image_size = image_size
        self.num_classes = num_classes
        self._input_name = sessions[0].get_inputs()[0].name
        self._output_name = sessions[0].get_outputs()[0].name
        self._free: queue.SimpleQueue[ort.InferenceSession] = queue.SimpleQueue()
        for session in sessions:
            self._free.put(session)
        self._wide = wide

    @property
    def on_gpu(self) -> bool:
        return self.providers[0] == "CUDAExecutionProvider"

    def run(self, batch: np.ndarray, alone: bool = False) -> np.ndarray:
        """Probabilities `[N, C]` for a uint8 `[N, H, W, 3]` batch. Blocks; call from a thread.

        `alone`: no other batch is running or waiting, so the wide session may take every core.
        """
        if alone and self._wide is not None:
            return self._run(self._wide, batch)
        session = self._free.get()
        try:
            return self._run(session, batch)
        finally:
            self._free.put(session)

    def _run(self, session: ort.InferenceSession, batch: np.ndarray) -> np.ndarray:
        (scores,) = session.run([self._output_name], {self._input_name: batch})
        return np.asarray(scores, dtype=np.float32)

    def warm_up(self, batch_sizes: Iterable[int]) -> None:
        """Run every session once per batch size so the first users don't pay for allocation."""
        height, width = self.image_size
        for size in batch_sizes:
            dummy = np.zeros((size, height, width, 3), dtype=np.uint8)
            for alone in [False] * self.instances + [True]:
                scores = self.run(dummy, alone)
                if scores.shape != (size, self.num_classes):
                    raise ContractError(
                        f"output shape {list(scores.shape)} for a batch of {size}, "
                        f"expected [{size}, {self.num_classes}]"
                    )


def _session(
    model: bytes, providers: list[str], settings: ServiceSettings, threads: int
) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = settings.inter_op_threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_cpu_mem_arena = settings.cpu_mem_arena
    spinning = "1" if settings.intra_op_spinning else "0"
    options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
    options.add_session_config_entry("session.inter_op.allow_spinning", spinning)
    return ort.InferenceSession(model, sess_options=options, providers=providers)


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().split("\n")[0][:300]
