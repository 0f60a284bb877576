"""Reading one file of a model repository: a regular file, whole, at most so many bytes.

Every reader of the repository (card.json, labels.txt, model.onnx, reference images,
config.json, repository.json) goes through `read_regular_file`, so no entry can make a reader
wait or grow without bound: a FIFO, a socket, a device (`/dev/zero`) or a folder where a file
belongs is refused from its `stat` before it is opened, and a file larger than the reader's
bound is refused from its size before a byte is read. What is read is a regular file, whose
reads never wait for a writer, so a read ends.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from roost.contract.errors import ContractError

_KINDS = {
    stat.S_ISREG: "a file",
    stat.S_ISDIR: "a folder",
    stat.S_ISFIFO: "a FIFO",
    stat.S_ISSOCK: "a socket",
    stat.S_ISCHR: "a character device",
    stat.S_ISBLK: "a block device",
}


def kind_of(mode: int) -> str:
    """What an entry of this `st_mode` is, in words: "a FIFO", "a folder", "a file"."""
    return next((name for test, name in _KINDS.items() if test(mode)), "an unknown kind")


def read_regular_file(path: Path, max_bytes: int, name: str | None = None) -> bytes:
    """The whole content of `path`, a regular file (or a link to one) of at most `max_bytes`.

    Raises FileNotFoundError when nothing is at `path` (not even a link), for the caller to say
    whether that is allowed; ContractError, naming the file as `name` (default: its file name),
    for anything else: not a regular file, a link to nothing, larger than `max_bytes`,
    unreadable.
    """
    name = name or path.name
    try:
        found = os.stat(path)
    except FileNotFoundError:
        if os.path.lexists(path):
            raise ContractError(f"{name} is a link to nothing") from None
        raise
    except OSError as exc:
        raise ContractError(f"{name} cannot be read: {exc.strerror}") from None
    _check(found, max_bytes, name)
    try:
        # O_NONBLOCK: should the entry be swapped for a FIFO after the stat, opening it still
        # returns at once (and the fstat below refuses it); O_NOCTTY: a terminal never
        # becomes the process's.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise ContractError(f"{name} cannot be read: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        try:
            opened = os.fstat(fd)
            _check(opened, max_bytes, name)
            # The size it has, plus one byte; only a file that grew since gives that byte,
            # and then the rest up to one byte past the bound, so it is refused too.
            content = handle.read(opened.st_size + 1)
            if len(content) > opened.st_size:
                content += handle.read(max_bytes + 1 - len(content))
        except OSError as exc:
            raise ContractError(f"{name} cannot be read: {exc.strerror}") from None
    if len(content) > max_bytes:
        raise ContractError(f"{name} is larger than {max_bytes:,} bytes")
    return content


def _check(found: os.stat_result, max_bytes: int, name: str) -> None:
    if not stat.S_ISREG(found.st_mode):
        raise ContractError(f"{name} is not a regular file ({kind_of(found.st_mode)})")
    if found.st_size > max_bytes:
        raise ContractError(f"{name} is {found.st_size:,} bytes, more than {max_bytes:,}")
