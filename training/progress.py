"""A progress bar for long loops over images, where the user can see one."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def progress(items: Iterable[T], total: int | None = None, desc: str = "") -> Iterator[T]:
    """``tqdm`` on stderr when it is installed and stderr is a terminal; else the plain items."""
    try:
        from tqdm import tqdm
    except ImportError:  # the train extra does not need the client's tqdm
        yield from items
        return
    yield from tqdm(items, total=total, desc=desc, unit="image", file=sys.stderr, disable=None)
