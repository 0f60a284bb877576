"""Repository faults never take a serving version down (issue #25, findings 4, 5 and 7).

- A version whose files change in place keeps its loaded session until files that load replace
  it (a torn copy of model.onnx is refused, and the version serves on).
- A traffic policy takes effect only once every version it names serves (load, then switch);
  one that cannot be served is refused and the policy in force stays; /readyz says when the
  policy in force names a version that does not serve.
- Every file of the repository is read as a bounded regular file: a folder, FIFO, device, link
  to nothing or oversized file where a file belongs is an error of its model (or version)
  alone; the reload ends and the other models load.

In-process registry tests first; then `slow` ones against a real server with a client loop of
valid requests during the fault (zero may fail).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from modelkit import colour_model, publish, solid_png
from servers import RoostServer, sample

import service.repository.registry as registry_module
from roost.contract.card import MAX_CARD_BYTES
from roost.contract.errors import ContractError
from roost.contract.files import read_regular_file
from roost.contract.labels import MAX_LABELS_BYTES
from roost.contract.layout import MAX_SETTINGS_FILE_BYTES
from roost.contract.onnx_io import MAX_MODEL_BYTES
from service.errors import ModelNotFound, NotReady
from service.model_config import ModelConfigFile
from service.observability.metrics import ServiceMetrics
from service.repository.registry import ModelRegistry
from service.settings import ServiceSettings

HANG_GUARD_S = 60.0
"""Only catches a reload that hangs (a FIFO read on the old code); never a timing claim."""

GREEN = solid_png((10, 200, 10))


def registry_for(repo: Path) -> ModelRegistry:
    return ModelRegistry(ServiceSettings(model_repo=repo), ServiceMetrics())


async def reload(registry: ModelRegistry) -> None:
    await asyncio.wait_for(registry.reload(), HANG_GUARD_S)


def load_failures(registry: ModelRegistry, name: str) -> float:
    return float(registry._metrics.load_failures.labels(name)._value.get())


def write_config(repo: Path, name: str, config: dict[str, object]) -> None:
    """config.json replaced whole, as an operator's editor or a config map does."""
    staging = repo / name / ".config.json.tmp"
    staging.write_text(json.dumps(config))
    os.replace(staging, repo / name / "config.json")


def split(stable: int, canary: int | None = None, **extra: object) -> dict[str, object]:
    labels = {"stable": stable} if canary is None else {"stable": stable, "canary": canary}
    traffic = {"stable": 100} if canary is None else {"stable": 90, "canary": 10}
    return {"version_labels": labels, "traffic": traffic, **extra}


def tear(path: Path) -> None:
    """Overwrite a file in place with its first half: a copy caught half way."""
    content = path.read_bytes()
    with path.open("r+b") as handle:
        handle.truncate(len(content) // 2)


# --- the reader --------------------------------------------------------------------------------


BAD_KINDS = ["folder", "fifo", "dev_zero", "dangling", "huge"]
"""What can stand where a file belongs; `huge` is a regular file one byte over the bound."""

WHAT_IT_SAYS = {
    "folder": "a folder",
    "fifo": "a FIFO",
    "dev_zero": "a character device",
    "dangling": "a link to nothing",
    "huge": "bytes, more than",
}


class BadEntries:
    """Puts bad entries where files belong; `release()` opens every FIFO made for writing and
    closes it, so a reader blocked on one (the old code) sees its end and its thread ends."""

    def __init__(self) -> None:
        self.fifos: list[Path] = []

    def __call__(self, path: Path, kind: str, bound: int) -> None:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        if kind == "folder":
            path.mkdir()
        elif kind == "fifo":
            os.mkfifo(path)
            self.fifos.append(path)
        elif kind == "dev_zero":
            path.symlink_to("/dev/zero")
        elif kind == "dangling":
            path.symlink_to(path.parent / "nothing-here")
        elif kind == "huge":
            with path.open("wb") as handle:
                handle.truncate(bound + 1)  # sparse: no disk, no memory
        else:
            raise ValueError(kind)

    def release(self) -> None:
        for fifo in self.fifos:
            for _ in range(100):  # a blocked reader may be between two opens
                try:
                    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
                except OSError:  # no reader (any more)
                    break


@pytest.fixture
def make_bad() -> Iterator[BadEntries]:
    """`make_bad(path, kind, bound)` puts a bad entry at `path`; FIFOs are released at the end
    (a test that reloads on the event loop releases them itself, before the loop closes)."""
    bad = BadEntries()
    yield bad
    bad.release()


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_read_regular_file_refuses_what_is_not_a_bounded_regular_file(
    tmp_path: Path, kind: str, make_bad: BadEntries
) -> None:
    path = tmp_path / "card.json"
    make_bad(path, kind, 100)
    with pytest.raises(ContractError, match=WHAT_IT_SAYS[kind]) as refused:
        read_regular_file(path, 100)
    assert "card.json" in str(refused.value)


def test_read_regular_file_reads_files_and_links_to_them_whole(tmp_path: Path) -> None:
    path = tmp_path / "labels.txt"
    path.write_bytes(b"x" * 100)
    assert read_regular_file(path, 100) == b"x" * 100
    (tmp_path / "link").symlink_to(path)
    assert read_regular_file(tmp_path / "link", 100, "labels.txt") == b"x" * 100
    with pytest.raises(FileNotFoundError):
        read_regular_file(tmp_path / "absent", 100)


# --- finding 4: files changed in place ---------------------------------------------------------


@pytest.mark.parametrize("versions", [[1], [1, 2]], ids=["only-version", "latest-of-two"])
async def test_a_torn_copy_in_place_keeps_the_loaded_session_serving(
    repo: Path, versions: list[int]
) -> None:
    for v in versions:
        publish(repo, "colours", v)
    latest = versions[-1]
    registry = registry_for(repo)
    await reload(registry)
    before = registry.get("colours")
    model = repo / "colours" / str(latest) / "model.onnx"
    complete = model.read_bytes()
    tear(model)
    await reload(registry)
    # The session loaded before serves on, the version is still the default, and /readyz says
    # ready since it serves; the failure is in the log's metric and the version's reason.
    assert registry.get("colours") is before and before.version == latest
    assert registry.readiness() == (True, [])
    record = registry.models()["colours"].versions[latest]
    assert record.state == "ready" and "does not match card.json" in (record.reason or "")
    assert load_failures(registry, "colours") == 1
    await reload(registry)  # an unchanged failure is neither retried nor counted again
    assert load_failures(registry, "colours") == 1 and registry.get("colours") is before
    model.write_bytes(complete)  # the copy completes: files that load replace the session
    await reload(registry)
    after = registry.get("colours")
    assert after is not before and after.version == latest
    assert registry.models()["colours"].versions[latest].reason is None
    await registry.close()


async def test_a_version_policy_whose_versions_fail_keeps_what_serves(repo: Path) -> None:
    publish(repo, "colours", 1)
    registry = registry_for(repo)
    await reload(registry)
    publish(repo, "colours", 2, model=colour_model()[:-40])
    write_config(repo, "colours", {"version_policy": {"specific": [2]}})
    await reload(registry)
    assert registry.get("colours").version == 1  # not retired for a version that failed
    assert registry.models()["colours"].versions[2].state == "failed"
    publish(repo, "colours", 3)
    write_config(repo, "colours", {"version_policy": {"specific": [3]}})
    await reload(registry)
    assert set(registry.models()["colours"].served) == {3}
    await registry.close()


# --- finding 5: the traffic policy ------------------------------------------------------------


async def test_a_new_policy_waits_until_the_versions_it_names_serve(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish(repo, "colours", 1, config=split(1))
    registry = registry_for(repo)
    await reload(registry)
    loading, release = threading.Event(), threading.Event()
    real_load = registry_module.load_version

    def held_load(files, *args):  # type: ignore[no-untyped-def]
        if files.version == 2:
            loading.set()
            release.wait(HANG_GUARD_S)
        return real_load(files, *args)

    monkeypatch.setattr(registry_module, "load_version", held_load)
    publish(repo, "colours", 2)
    write_config(repo, "colours", split(2))  # one reload: a new version and the label on it
    reloading = asyncio.create_task(reload(registry))
    try:
        assert await asyncio.to_thread(loading.wait, HANG_GUARD_S)
        # Version 2 is loading: the policy in force still sends everything to version 1.
        assert registry.route("colours", None).served.version == 1
        assert registry.get("colours", "stable").version == 1
        assert registry.readiness() == (True, [])
    finally:
        release.set()
        await reloading
    assert registry.route("colours", None).served.version == 2
    assert registry.get("colours", "stable").version == 2
    assert set(registry.models()["colours"].served) == {2}  # then the old one unloads
    await registry.close()


@pytest.mark.parametrize("target", ["missing", "failed"])
async def test_a_policy_naming_a_version_that_does_not_serve_is_refused(
    repo: Path, target: str
) -> None:
    publish(repo, "colours", 1, config=split(1))
    registry = registry_for(repo)
    await reload(registry)
    if target == "failed":
        publish(repo, "colours", 7, card_extra={"sha256": "f" * 64})
    write_config(repo, "colours", split(7))
    await reload(registry)
    entry = registry.models()["colours"]
    assert entry.policy is not None and entry.policy.config.version_labels == {"stable": 1}
    assert registry.route("colours", None).served.version == 1
    assert registry.get("colours", "stable").version == 1
    assert "'stable' names version 7" in (entry.policy_error or "")
    assert ("failed" if target == "failed" else "not in the repository") in entry.policy_error
    assert registry.readiness() == (True, [])  # the policy in force serves
    # the refusal is counted once (a failed version 7 is counted for itself too)
    failures = load_failures(registry, "colours")
    assert failures == (2 if target == "failed" else 1)
    await reload(registry)
    assert load_failures(registry, "colours") == failures
    publish(repo, "colours", 8)
    write_config(repo, "colours", split(8))  # a policy that can be served takes effect
    await reload(registry)
    assert registry.route("colours", None).served.version == 8
    assert registry.models()["colours"].policy_error is None
    await registry.close()


async def test_a_policy_refused_at_the_first_load_serves_nothing_and_says_why(
    repo: Path,
) -> None:
    publish(repo, "colours", 1, config=split(1, 2))
    publish(repo, "other", 1)
    registry = registry_for(repo)
    await reload(registry)
    ready, reasons = registry.readiness()
    assert not ready and len(reasons) == 1
    assert "'canary' names version 2, which is not in the repository" in reasons[0]
    with pytest.raises(NotReady, match="names version 2"):
        registry.route("colours", None)
    assert registry.route("other", None).served.version == 1  # the other model serves
    publish(repo, "colours", 2)
    await reload(registry)
    assert registry.readiness() == (True, [])
    assert registry.route("colours", "canary").served.version == 2
    await registry.close()


async def test_readiness_says_when_the_policy_in_force_names_a_version_not_serving(
    repo: Path,
) -> None:
    publish(repo, "colours", 1)
    publish(repo, "colours", 2, config=split(1, 2))
    registry = registry_for(repo)
    await reload(registry)
    assert registry.readiness() == (True, [])
    entry = registry.models()["colours"]
    registry._fail_serving(entry, entry.served[2], "the batch loop died")  # what a batcher calls
    ready, reasons = registry.readiness()
    assert not ready
    assert any("'canary' names version 2, which failed: the batch loop died" in r for r in reasons)
    assert registry.route("colours", None).served.version == 1  # the split's other label
    await registry.close()


async def test_a_labelled_version_whose_folder_goes_serves_while_the_policy_names_it(
    repo: Path,
) -> None:
    publish(repo, "colours", 1)
    publish(repo, "colours", 2, config=split(1, 2))
    registry = registry_for(repo)
    await reload(registry)
    canary = registry.get("colours", "canary")
    shutil.rmtree(repo / "colours" / "2")
    await reload(registry)
    assert registry.get("colours", "canary") is canary and registry.readiness() == (True, [])
    assert "folder is gone" in (registry.models()["colours"].versions[2].reason or "")
    write_config(repo, "colours", split(1))  # the label leaves first; then the version goes
    await reload(registry)
    assert set(registry.models()["colours"].served) == {1}
    await registry.close()


def test_config_refuses_a_rollback_of_the_only_label_with_traffic() -> None:
    labels = {"stable": 1, "canary": 2}
    for traffic in ({"canary": 100}, {"canary": 100, "stable": 0}):
        with pytest.raises(ValueError, match="the only label with traffic"):
            ModelConfigFile.model_validate(
                {"version_labels": labels, "traffic": traffic, "rollback": {"label": "canary"}}
            )
    ModelConfigFile.model_validate(
        {**split(1, 2), "rollback": {"label": "canary"}}  # stable takes the traffic back
    )


async def test_a_rollback_of_the_only_weighted_label_is_refused_and_the_old_policy_serves(
    repo: Path,
) -> None:
    publish(repo, "colours", 1)
    publish(repo, "colours", 2, config=split(1, 2))
    registry = registry_for(repo)
    await reload(registry)
    only_canary = {
        "version_labels": {"stable": 1, "canary": 2},
        "traffic": {"canary": 100},
        "rollback": {"label": "canary", "min_requests": 1, "max_error_ratio": 0.0},
    }
    write_config(repo, "colours", only_canary)
    await reload(registry)
    entry = registry.models()["colours"]
    assert "the only label with traffic" in (entry.config_error or "")
    assert entry.policy is not None and entry.policy.config.traffic == {"stable": 90, "canary": 10}
    assert load_failures(registry, "colours") == 1 and registry.readiness() == (True, [])
    await registry.close()


# --- finding 7: bad entries --------------------------------------------------------------------

VERSION_FILES = {
    "labels.txt": MAX_LABELS_BYTES,
    "card.json": MAX_CARD_BYTES,
    "model.onnx": MAX_MODEL_BYTES,
    "references/0.png": ServiceSettings().max_upload_bytes,
}


def served_versions(registry: ModelRegistry, name: str) -> set[int]:
    return set(registry.models()[name].served)


BAD_ENTRIES = [
    (target, kind)
    for target in ["config.json", "repository.json", *VERSION_FILES]
    for kind in BAD_KINDS
] + [("2", kind) for kind in ("file", "fifo", "dev_zero", "dangling")]
"""Where (a file of model `bad`, of its version 2, or the folder `2` itself) and what."""


@pytest.mark.parametrize(("target", "kind"), BAD_ENTRIES)
async def test_a_bad_entry_is_an_error_of_its_model_alone(
    repo: Path,
    target: str,
    kind: str,
    make_bad: BadEntries,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`target` in model `bad`: its config.json, the repository's repository.json, a file of
    its new version 2, or the folder `2` itself; `other` publishes a version in the same
    reload, which must load."""
    publish(repo, "bad", 1)
    publish(repo, "other", 1)
    (repo / "repository.json").write_text(json.dumps({"default_model": "other"}))
    registry = registry_for(repo)
    await reload(registry)
    if target in VERSION_FILES:
        make_bad(publish(repo, "bad", 2) / target, kind, VERSION_FILES[target])
    elif target == "2":
        if kind == "file":
            (repo / "bad" / "2").write_text("not a folder")
        else:
            make_bad(repo / "bad" / "2", kind, 0)
    else:
        where = repo if target == "repository.json" else repo / "bad"
        make_bad(where / target, kind, MAX_SETTINGS_FILE_BYTES)
    publish(repo, "other", 2)
    try:
        await reload(registry)  # ends: nothing waits on a FIFO or reads /dev/zero
    finally:
        make_bad.release()
    assert served_versions(registry, "other") == {2}
    assert served_versions(registry, "bad") == {1}  # the version serving stays
    entry = registry.models()["bad"]
    expected = "is not a version folder (a file)" if kind == "file" else WHAT_IT_SAYS[kind]
    if (target, kind) == ("references/0.png", "dev_zero"):
        expected = "outside the version folder"
    if target == "config.json":
        assert expected in (entry.config_error or "") and "config.json" in entry.config_error
    elif target == "repository.json":
        assert "repository.json" in caplog.text and expected in caplog.text
        with pytest.raises(ModelNotFound):  # left out, as an invalid one is
            registry.default_model()
    else:
        assert entry.versions[2].state == "failed"
        assert expected in (entry.versions[2].reason or "")
    await registry.close()


# --- against a real server, under load ---------------------------------------------------------


class Load:
    """Threads posting valid images to `model` and one polling /readyz, while an action runs."""

    def __init__(self, server: RoostServer, model: str = "colours", threads: int = 4) -> None:
        self.server, self.model, self.threads = server, model, threads
        self.answers: list[tuple[int, int | None]] = []
        """(status, version answered) of every valid request."""
        self.ready: list[int] = []
        self._stop = threading.Event()

    def _post(self) -> None:
        with httpx.Client(base_url=self.server.url, timeout=30) as client:
            while not self._stop.is_set():
                r = client.post(
                    f"/v1/classify?model={self.model}",
                    content=GREEN,
                    headers={"content-type": "image/png"},
                )
                version = r.json().get("version") if r.status_code == 200 else None
                self.answers.append((r.status_code, version))

    def _probe(self) -> None:
        with httpx.Client(base_url=self.server.url, timeout=30) as client:
            while not self._stop.is_set():
                self.ready.append(client.get("/readyz").status_code)
                time.sleep(0.01)

    def during(self, action: Callable[[], None]) -> None:
        workers = [threading.Thread(target=self._post) for _ in range(self.threads)]
        workers.append(threading.Thread(target=self._probe))
        for worker in workers:
            worker.start()
        try:
            deadline = time.monotonic() + 30
            while len(self.answers) < 20 and time.monotonic() < deadline:
                time.sleep(0.01)
            action()
            seen = len(self.answers)
            while len(self.answers) < seen + 40 and time.monotonic() < deadline + 30:
                time.sleep(0.01)
        finally:
            self._stop.set()
            for worker in workers:
                worker.join(timeout=60)

    @property
    def failed(self) -> list[int]:
        return [status for status, _ in self.answers if status != 200]


def models_of(server: RoostServer) -> dict[str, dict[str, object]]:
    return {m["name"]: m for m in server.client.get("/v1/models").json()["models"]}


@pytest.mark.slow
def test_torn_model_copy_under_load(repo: Path, start_server, reliability) -> None:  # type: ignore[no-untyped-def]
    publish(repo, "colours", 1)
    server = start_server(repo)
    server.wait_ready()
    load = Load(server)

    def torn_copy() -> None:
        tear(repo / "colours" / "1" / "model.onnx")
        assert server.reload().status_code == 200

    load.during(torn_copy)
    assert load.answers and load.failed == [], (len(load.failed), sorted(set(load.failed)))
    assert set(load.ready) == {200}
    (version,) = models_of(server)["colours"]["versions"]  # type: ignore[misc]
    assert version["state"] == "ready" and "does not match card.json" in version["reason"]
    metrics = server.client.get("/metrics").text
    assert sample(metrics, "roost_model_load_failures_total", model="colours") == 1
    assert "colours version 1 failed to load again" in server.log()
    reliability.add(
        "repository faults",
        "serving model.onnx overwritten in place with half its bytes, reload",
        len(load.answers),
        f"all {len(load.answers)} valid requests 200 from the session loaded before; /readyz 200 "
        f"({len(load.ready)} probes); version ready with the failure as its reason, metric, log",
    )


@pytest.mark.slow
def test_new_version_and_its_label_in_one_reload_under_load(
    repo: Path, start_server, reliability
) -> None:  # type: ignore[no-untyped-def]
    size = (256, 256)
    publish(repo, "colours", 1, model=colour_model(size), size=size, config=split(1))
    server = start_server(repo)
    server.wait_ready()
    load = Load(server)

    def publish_and_point() -> None:
        publish(repo, "colours", 2, model=colour_model(size), size=size)
        write_config(repo, "colours", split(2))
        assert server.reload().status_code == 200

    load.during(publish_and_point)
    assert load.answers and load.failed == [], (len(load.failed), sorted(set(load.failed)))
    assert set(load.ready) == {200}
    versions = [v for _, v in load.answers]
    assert versions[0] == 1 and versions[-1] == 2
    reliability.add(
        "repository faults",
        "new version published and the only traffic label moved to it in one reload",
        len(load.answers),
        f"all {len(load.answers)} valid requests 200: version 1 until version 2 was warm, then "
        "version 2; /readyz 200 throughout",
    )


@pytest.mark.slow
def test_unservable_policies_are_refused_under_load(repo: Path, start_server, reliability) -> None:  # type: ignore[no-untyped-def]
    publish(repo, "colours", 1)
    publish(repo, "colours", 2, config=split(1, 2))
    server = start_server(repo)
    server.wait_ready()
    refusals = {
        "label at a missing version": (split(9), "'stable' names version 9"),
        "rollback of the only weighted label": (
            {
                "version_labels": {"stable": 1, "canary": 2},
                "traffic": {"canary": 100},
                "rollback": {"label": "canary"},
            },
            "the only label with traffic",
        ),
    }
    for what, (config, says) in refusals.items():
        load = Load(server)

        def refused(config: dict[str, object] = config) -> None:
            write_config(repo, "colours", config)
            assert server.reload().status_code == 200

        before = sample(
            server.client.get("/metrics").text, "roost_model_load_failures_total", model="colours"
        )
        load.during(refused)
        assert load.answers and load.failed == [], (
            what,
            len(load.failed),
            sorted(set(load.failed)),
        )
        assert set(load.ready) == {200}
        assert {v for _, v in load.answers} <= {1, 2}
        detail = server.client.get("/v1/models/colours").json()
        assert detail["routing"]["traffic"] == {"stable": 90, "canary": 10}  # still in force
        assert says in str(detail["error"])
        after = sample(
            server.client.get("/metrics").text, "roost_model_load_failures_total", model="colours"
        )
        assert after == before + 1 and says in server.log()
        reliability.add(
            "repository faults",
            f"traffic policy with a {what}, reload",
            len(load.answers),
            f"refused (log, load-failure metric, model error in /v1/models); all "
            f"{len(load.answers)} valid requests 200 on the policy in force; /readyz 200",
        )


@pytest.mark.slow
def test_bad_entries_under_load_then_sigterm(
    repo: Path, start_server, reliability, make_bad
) -> None:  # type: ignore[no-untyped-def]
    """Every bad entry at once, each in its own model (repository.json at the top); the model
    under load publishes a new version in the same reload, which must serve."""
    faults = {
        f"cfg-{kind}": ("config.json", kind) for kind in ("folder", "fifo", "dev_zero", "huge")
    } | {
        f"{stem}-{kind}": (name, kind)
        for name, stem in (("labels.txt", "labels"), ("card.json", "card"), ("model.onnx", "onnx"))
        for kind in ("folder", "fifo", "dev_zero")
    }
    publish(repo, "colours", 1)
    for model in faults:
        publish(repo, model, 1)
    (repo / "repository.json").write_text(json.dumps({"default_model": "colours"}))
    server = start_server(repo)
    server.wait_ready()
    load = Load(server)
    reload_s: list[float] = []

    def break_everything() -> None:
        for model, (name, kind) in faults.items():
            if name == "config.json":
                make_bad(repo / model / name, kind, MAX_SETTINGS_FILE_BYTES)
            else:
                make_bad(publish(repo, model, 2) / name, kind, VERSION_FILES[name])
        make_bad(repo / "repository.json", "fifo", 0)
        publish(repo, "colours", 2)
        started = time.monotonic()
        assert server.reload().status_code == 200
        reload_s.append(time.monotonic() - started)

    load.during(break_everything)
    assert load.answers and load.failed == [], (len(load.failed), sorted(set(load.failed)))
    assert set(load.ready) == {200}
    assert load.answers[-1][1] == 2  # the new version of the model under load serves
    models = models_of(server)
    for model, (name, kind) in faults.items():
        states = {v["version"]: v for v in models[model]["versions"]}  # type: ignore[union-attr]
        assert states[1]["state"] == "ready", model  # each fault is its model's alone
        error = models[model]["error"] if name == "config.json" else states[2]["reason"]
        assert name in str(error) and WHAT_IT_SAYS[kind] in str(error), (model, error)
    assert "repository.json is not a regular file (a FIFO)" in server.log()
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=30) == 0
    reliability.add(
        "repository faults",
        "config.json, labels.txt, card.json, model.onnx as a folder, FIFO, "
        "link to /dev/zero or oversized, each in its own model, and repository.json as a FIFO, "
        "while another model publishes a version",
        len(load.answers),
        f"reload answered in {reload_s[0]:.1f} s; each an error of its model or version alone, "
        f"versions serving stayed; the new version served; all {len(load.answers)} valid "
        "requests 200; SIGTERM exit 0",
    )
