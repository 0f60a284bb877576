"""`roost serve` starting itself again with glibc's huge-page tunable (service/huge_pages.py)."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest
from modelkit import publish

from service.huge_pages import TUNABLE, environment_with_huge_pages, thp_mode


@pytest.mark.parametrize(
    ("text", "mode"),
    [
        ("always [madvise] never\n", "madvise"),
        ("[always] madvise never\n", "always"),
        ("always madvise [never]\n", "never"),
        ("", None),
    ],
)
def test_thp_mode_is_the_bracketed_word(tmp_path: Path, text: str, mode: str | None) -> None:
    (tmp_path / "enabled").write_text(text)
    assert thp_mode(tmp_path / "enabled") == mode


def test_no_thp_file_means_no_mode(tmp_path: Path) -> None:
    assert thp_mode(tmp_path / "absent") is None


def test_the_tunable_is_added_under_madvise() -> None:
    environ = {"PATH": "/bin"}
    assert environment_with_huge_pages(environ, "madvise", "glibc") == {
        "PATH": "/bin",
        "GLIBC_TUNABLES": f"{TUNABLE}=1",
    }
    assert environ == {"PATH": "/bin"}  # the caller's mapping is left alone


def test_other_tunables_are_kept() -> None:
    environ = {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}
    changed = environment_with_huge_pages(environ, "madvise", "glibc")
    assert changed is not None
    assert changed["GLIBC_TUNABLES"] == f"glibc.malloc.arena_max=2:{TUNABLE}=1"


@pytest.mark.parametrize(
    ("environ", "mode", "libc"),
    [
        ({}, "always", "glibc"),  # the kernel already backs the heap
        ({}, "never", "glibc"),  # the kernel refuses
        ({}, None, "glibc"),  # no transparent huge pages at all
        ({}, "madvise", ""),  # musl and others: not glibc's tunable
        ({"GLIBC_TUNABLES": f"{TUNABLE}=0"}, "madvise", "glibc"),  # the operator said no
        ({"GLIBC_TUNABLES": f"glibc.malloc.arena_max=2:{TUNABLE}=2"}, "madvise", "glibc"),
    ],
)
def test_no_restart_where_it_would_change_nothing(
    environ: dict[str, str], mode: str | None, libc: str
) -> None:
    assert environment_with_huge_pages(environ, mode, libc) is None


def _environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


@pytest.mark.parametrize("huge_pages", ["true", "false"])
def test_real_server_runs_under_the_tunable_where_the_kernel_asks(
    repo: Path, start_server, huge_pages: str
) -> None:  # type: ignore[no-untyped-def]
    publish(repo, "colours", 1)
    server = start_server(repo, ROOST_HUGE_PAGES=huge_pages)
    server.wait_ready()
    # The same process (exec keeps the pid), answering, with the environment it runs under.
    assert server.client.get("/readyz").status_code == 200
    tunables = _environ_of(server.process.pid).get("GLIBC_TUNABLES", "")
    expected = (
        huge_pages == "true" and thp_mode() == "madvise" and platform.libc_ver()[0] == "glibc"
    )
    assert (f"{TUNABLE}=1" in tunables.split(":")) is expected


def test_a_failed_restart_serves_on_without_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import service.huge_pages as huge_pages

    def refuse(path: str, argv: list[str], env: dict[str, str]) -> None:
        raise PermissionError("exec refused")

    monkeypatch.setattr(huge_pages, "thp_mode", lambda: "madvise")
    monkeypatch.setattr(huge_pages.platform, "libc_ver", lambda: ("glibc", "2.36"))
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    monkeypatch.setattr(huge_pages.os, "execve", refuse)
    huge_pages.restart_with_huge_pages()  # returns: the server goes on without huge pages
    assert "exec refused" in caplog.text
