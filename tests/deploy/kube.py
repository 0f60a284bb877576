"""`kubectl kustomize` for the deploy tests: a kustomization as the documents it renders."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml
from servers import require_program


def kustomize(folder: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [require_program("kubectl", "kubectl"), "kustomize", str(folder)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]
