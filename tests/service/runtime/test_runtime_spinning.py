"""ONNX Runtime's pool threads spin only while a run is in progress (service/runtime/classifier.py)."""

from __future__ import annotations

import warnings

import pytest
from modelkit import colour_model

from service.runtime.classifier import CPU, CUDA, OnnxClassifier, _session
from service.settings import ServiceSettings

SIZE = (16, 16)


@pytest.mark.parametrize(("spinning", "allowed"), [(True, "1"), (False, "0")])
def test_threads_spin_between_operators_and_stop_when_the_run_returns(
    spinning: bool, allowed: str
) -> None:
    """ROOST_INTRA_OP_SPINNING (on by default) lets every session's pool threads spin, and every
    session stops them when its last concurrent run returns, so a spinning thread never takes a
    core from the other slots between runs."""
    assert ServiceSettings().intra_op_spinning is True
    settings = ServiceSettings(use_cuda=False, intra_op_spinning=spinning)
    classifier = OnnxClassifier(colour_model(SIZE), SIZE, 3, settings)
    slots = [*classifier._slots, *([classifier._wide] if classifier._wide else [])]
    for slot in slots:
        options = slot.session.get_session_options()
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == allowed
        assert options.get_session_config_entry("session.inter_op.allow_spinning") == allowed
        assert options.get_session_config_entry("session.force_spinning_stop") == "1"


def test_cuda_sessions_never_spin() -> None:
    """A CUDA session's pool threads would spin for the length of every GPU run, on the cores
    the decode threads need: asked for CUDA, the options say no spinning whatever the setting.
    (Here onnxruntime has no CUDA provider and falls back to the CPU with a warning; the
    options are what is checked.)"""
    providers = [(CUDA, {}), CPU]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "CUDAExecutionProvider is not available" on a CPU
        session = _session(colour_model(SIZE), providers, ServiceSettings(), 2)
    options = session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.get_session_config_entry("session.force_spinning_stop") == "1"
