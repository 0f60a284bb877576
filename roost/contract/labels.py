"""`labels.txt`: one class per line in output order, optionally `name<TAB>url`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from roost.contract.errors import ContractError
from roost.contract.files import read_regular_file
from roost.contract.layout import LABELS_FILE


@dataclass(frozen=True)
class Label:
    name: str
    url: str | None = None


MAX_LABELS_BYTES = 16 * 1024 * 1024
"""Most bytes of a `labels.txt`: room for a million classes with short names."""


def read_labels(folder: Path) -> list[Label]:
    try:
        content = read_regular_file(folder / LABELS_FILE, MAX_LABELS_BYTES)
    except FileNotFoundError:
        raise ContractError(f"{LABELS_FILE} is missing") from None
    try:
        lines = content.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise ContractError(f"{LABELS_FILE} is not UTF-8") from None
    while lines and not lines[-1].strip():
        lines.pop()
    labels = []
    for number, line in enumerate(lines, start=1):
        name, _, url = line.partition("\t")
        if not name.strip():
            raise ContractError(f"{LABELS_FILE} line {number} is blank")
        labels.append(Label(name.strip(), url.strip() or None))
    if not labels:
        raise ContractError(f"{LABELS_FILE} is empty")
    return labels


def write_labels(folder: Path, labels: list[Label]) -> None:
    for label in labels:
        if not label.name.strip() or any(c in label.name for c in "\t\r\n"):
            raise ContractError(f"label {label.name!r} is blank or holds a tab or line break")
    lines = [f"{label.name}\t{label.url}" if label.url else label.name for label in labels]
    (folder / LABELS_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
