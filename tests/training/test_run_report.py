"""What a run reports about itself: the restored epoch, the result line, the evidence warning."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from training.evaluate import restored_epoch, result_line

pytestmark = [
    pytest.mark.training,
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword"),
]


def test_restored_epoch_is_the_last_phase_s_lowest_val_loss() -> None:
    assert restored_epoch({"val_loss": [3.0, 2.0, 2.0, 2.5]}, None) == 2  # the first of equals
    # phase 2 (epochs 3..4) restores its own best, even when phase 1 had a lower val loss
    assert restored_epoch({"val_loss": [3.0, 1.0, 2.5, 2.0]}, 2) == 4
    assert restored_epoch({}, None) is None


def test_result_line_names_val_accuracy_once_without_a_test_split() -> None:
    summary = {
        "evaluated_on": "val",
        "val_accuracy": 0.5,
        "val_macro_f1": 0.4,
        "test_accuracy": None,
        "train_accuracy": 0.75,
        "restored_epoch": 3,
    }
    line = result_line(summary, Path("summary.json"))
    assert line.startswith("val accuracy 0.500, macro-F1 0.400, train accuracy 0.750 (epoch 3)")
    tested = {**summary, "evaluated_on": "test", "test_accuracy": 0.25, "test_macro_f1": 0.2}
    line = result_line(tested, Path("summary.json"))
    assert line.startswith("test accuracy 0.250, macro-F1 0.200, val accuracy 0.500, train")


def test_evaluate_ends_with_the_evidence_rule_s_warning(
    trained_run: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The run's last line is training/evidence.py's verdict (tightened here so that the tiny
    run breaks it), the same the export gate reads; the curves are drawn."""
    from training import evidence
    from training.__main__ import main

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    (run / "curves.png").unlink()
    assert main(["evaluate", str(run)]) == 0
    assert "held-out accuracy disagrees" not in capsys.readouterr().err
    assert (run / "curves.png").stat().st_size > 0

    monkeypatch.setattr(evidence, "MAX_TRAIN_GAP", -2.0)
    assert main(["evaluate", str(run)]) == 0
    summary = json.loads((run / "summary.json").read_text())
    warning = capsys.readouterr().err.strip().splitlines()[-1]
    assert warning.startswith("warning: held-out accuracy disagrees with training")
    assert f"training accuracy {summary['train_accuracy']:.3f}" in warning
