"""The malloc arena cap the server applies at start."""

from __future__ import annotations

import platform

import pytest

from service.malloc import limit_malloc_arenas


def test_cap_applies_on_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert limit_malloc_arenas(2) is (platform.libc_ver()[0] == "glibc")


def test_an_operators_setting_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert limit_malloc_arenas(2) is False
