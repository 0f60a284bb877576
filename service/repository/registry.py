"""Which model versions serve: loading, atomic swaps, unloading after in-flight work, states.

Each version number has one `VersionRecord`: its state and the `ServedVersion` taking its
traffic, if any. The registry is the only writer. What makes that safe without locks: every
change happens on the event loop between two awaits, and a request looks a version up and
takes its lease without awaiting, so it sees the old `ServedVersion` or the new one, never a
half-made one; a lease then keeps the old one alive until the request is answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from roost.contract.bucket import StoreError
from roost.contract.errors import ContractError
from service.errors import ModelNotFound, NotReady, VersionNotFound
from service.model_config import ModelConfig, ModelPolicyConfig, select_versions
from service.observability.metrics import ServiceMetrics
from service.policy.model_policy import ModelPolicy
from service.repository.loading import VersionArtifacts, load_version
from service.repository.scan import ModelFiles, RepositoryFiles, VersionFiles, scan
from service.repository.source import RepositorySource, open_source
from service.runtime.batcher import BatcherConfig, BatchObserver, DynamicBatcher
from service.runtime.cpu_gate import CpuGate
from service.runtime.decode.pillow import PILLOW, ImageDecoder
from service.runtime.scores import Scores, ranked
from service.settings import ServiceSettings

log = logging.getLogger(__name__)

VersionState = Literal["loading", "ready", "failed", "unloading"]

VersionSelector = int | str | None
"""What a request asks for: a version number, a version label (`canary`), or nothing."""


@dataclass
class ServedVersion:
    """A version taking traffic: its artifacts, its batcher and who is using it."""

    name: str
    version: int
    config: ModelConfig
    artifacts: VersionArtifacts
    batcher: DynamicBatcher[Scores]
    leases: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def load_key(self) -> tuple[object, ...]:
        return (self.artifacts.files.fingerprint, self.config)

    @contextlib.contextmanager
    def lease(self) -> Iterator[ServedVersion]:
        """Held by a request from lookup to response, so unloading waits for it."""
        self.leases += 1
        self.idle.clear()
        try:
            yield self
        finally:
            self.leases -= 1
            if self.leases == 0:
                self.idle.set()


@dataclass
class VersionRecord:
    """One version number of a model: what happens to it and what serves it."""

    state: VersionState
    reason: str | None = None
    """Why it failed; for a version serving, why its files on disk are not what serves."""
    load_key: tuple[object, ...] | None = None
    """The files' fingerprint and config it was (or failed to be) loaded with last."""
    serving: ServedVersion | None = None
    """Takes this number's traffic; kept while a replacement loads (state "loading"), and
    after a replacement failed to load (state "ready" again, the failure in `reason`)."""


@dataclass(frozen=True)
class Route:
    """Where a request goes: the version that answers it, and one that gets a shadow copy."""

    served: ServedVersion
    policy: ModelPolicy
    shadow: ServedVersion | None = None


@dataclass
class ModelEntry:
    name: str
    policy: ModelPolicy | None = None
    """The traffic policy in force: config.json's policy keys, replaced when they change and
    every version they name serves; None until the first such policy, and nothing is routed
    to the model before it."""
    policy_error: str | None = None
    """Why config.json's policy keys are not the policy in force (a version they name does
    not serve); cleared when they take effect."""
    config: ModelConfig | None = None
    config_error: str | None = None
    versions: dict[int, VersionRecord] = field(default_factory=dict)

    @property
    def served(self) -> dict[int, ServedVersion]:
        """The versions taking traffic, by number."""
        return {v: r.serving for v, r in sorted(self.versions.items()) if r.serving is not None}

    def latest(self) -> ServedVersion | None:
        served = self.served
        return served[max(served)] if served else None


class ModelRegistry:
    def __init__(
        self,
        settings: ServiceSettings,
        metrics: ServiceMetrics,
        cpu_gate: CpuGate | None = None,
        decoder: ImageDecoder = PILLOW,
        source: RepositorySource | None = None,
    ) -> None:
        """`cpu_gate`: the server's, handed to every version it loads (runtime/cpu_gate.py);
        `decoder`: the one requests use, which checks every version's reference images;
        `source`: where the repository is read from (default: `settings.model_repo`)."""
        self._settings = settings
        self._source = source or open_source(
            settings.model_repo, settings.model_cache_dir, settings.model_cache_max_bytes
        )
        self._store_error: str | None = None
        """Why the last read of a bucket repository failed; None once one succeeds."""
        self._metrics = metrics
        self._cpu_gate = cpu_gate
        self._decoder = decoder
        self._models: dict[str, ModelEntry] = {}
        self._lock = asyncio.Lock()
        self._retiring: set[asyncio.Task[None]] = set()
        self._repository_default: str | None = None
        self.initial_load_done = False

    # --- lookups (request path) -------------------------------------------------------------

    def known_model(self, name: str) -> bool:
        return name in self._models

    def default_model(self) -> str:
        """ROOST_DEFAULT_MODEL, else the repository's repository.json, else the only model."""
        default = self._settings.default_model or self._repository_default
        if default:
            return default
        if len(self._models) == 1:
            return next(iter(self._models))
        raise ModelNotFound(
            "name a model (?model=NAME); the server has several and no default is configured "
            "(ROOST_DEFAULT_MODEL, or default_model in the repository's repository.json)"
        )

    def route(self, name: str, selector: VersionSelector, route_key: str | None = None) -> Route:
        """The version a request gets: the one it names, else the traffic split's draw (sticky
        per `route_key`), else the latest; plus, for a split request, maybe a shadow copy."""
        entry = self._entry(name)
        policy = entry.policy
        if policy is None:
            raise NotReady(self._not_serving(entry))
        if selector is not None:
            return Route(self.get(name, selector), policy)
        serving = set(entry.served)
        served = self.get(name, policy.choose(serving, route_key))
        shadow_version = policy.shadow_of(served.version, serving)
        shadow = None if shadow_version is None else entry.served[shadow_version]
        return Route(served, policy, shadow)

    def _entry(self, name: str) -> ModelEntry:
        entry = self._models.get(name)
        if entry is None:
            raise ModelNotFound(f"no model named {name!r}")
        return entry

    def get(self, name: str, version: VersionSelector = None) -> ServedVersion:
        entry = self._entry(name)
        if entry.policy is None:
            raise NotReady(self._not_serving(entry))
        if isinstance(version, str):
            labelled = entry.policy.config.version_labels
            if version not in labelled:
                raise VersionNotFound(f"model {name!r} has no version labelled {version!r}")
            version = labelled[version]
        if version is None:
            served = entry.latest()
            if served is None:
                raise NotReady(self._not_serving(entry))
            return served
        record = entry.versions.get(version)
        if record is not None and record.serving is not None:
            return record.serving
        if record is not None and record.state == "loading":
            raise NotReady(f"version {version} of {name!r} is still loading")
        if record is not None and record.state == "failed":
            raise VersionNotFound(f"version {version} of {name!r} failed: {record.reason}")
        raise VersionNotFound(f"model {name!r} has no version {version} serving")

    def models(self) -> dict[str, ModelEntry]:
        return dict(self._models)

    def readiness(self) -> tuple[bool, list[str]]:
        """Ready when the first load is done and every model serves: it has a version serving
        and a traffic policy in force, and every version that policy names is serving."""
        reasons = []
        if not self.initial_load_done:
            reasons.append("the model repository is still loading")
            if self._store_error is not None:
                reasons.append(self._store_error)
        elif not self._models:
            reasons.append(f"no models found in {self._source.description!r}")
        for entry in self._models.values():
            if not entry.served or entry.policy is None:
                reasons.append(self._not_serving(entry))
            loading = [v for v, r in entry.versions.items() if r.state == "loading"]
            if loading and not entry.served:
                reasons.append(f"model {entry.name!r} is loading versions {loading}")
            labels = {} if entry.policy is None else entry.policy.config.version_labels
            for label, version in labels.items():
                if version not in entry.served:
                    reasons.append(
                        f"model {entry.name!r}: label {label!r} names version {version}, "
                        f"which {self._state_of(entry, version)}"
                    )
        return not reasons, reasons

    # --- loading (one reload at a time) ------------------------------------------------------

    async def reload(self) -> None:
        """Bring what is served in line with the repository (a folder, or a bucket's mirror).
        A bucket that cannot be read leaves everything as it is, serving what is loaded."""
        async with self._lock:
            try:
                root = await asyncio.to_thread(self._source.refresh)
            except StoreError as exc:
                self._note_store_failure(str(exc))
                return
            self._note_store_read()
            repository = await asyncio.to_thread(scan, root)
            self._repository_default = self._repository_default_of(repository)
            found = repository.models
            for files in found.values():
                await self._sync_model(files)
            for name in set(self._models) - set(found):
                entry = self._models[name]
                for version in list(entry.served):
                    self._retire(entry, version)
                if entry.policy is not None:
                    entry.policy.close()
                del self._models[name]
            self.initial_load_done = True
            self._metrics.models_loaded.set(sum(1 for e in self._models.values() if e.served))

    def _note_store_failure(self, error: str) -> None:
        self._metrics.store_errors.labels(self._source.description).inc()
        self._metrics.store_up.labels(self._source.description).set(0)
        if self._store_error is None:
            log.error("the model store cannot be read (serving what is loaded): %s", error)
        self._store_error = f"the model store cannot be read: {error}"

    def _note_store_read(self) -> None:
        if not self._source.remote:
            return
        if self._store_error is not None:
            log.info("the model store %s can be read again", self._source.description)
        self._store_error = None
        self._metrics.store_up.labels(self._source.description).set(1)

    def _repository_default_of(self, repository: RepositoryFiles) -> str | None:
        if repository.settings_error is None:
            return repository.settings.default_model
        if self._repository_default is not None or not self.initial_load_done:
            log.error("%s; requests must name their model", repository.settings_error)
        return None

    async def close(self) -> None:
        async with self._lock:
            for entry in self._models.values():
                for version in list(entry.served):
                    self._retire(entry, version)
            await asyncio.gather(*self._retiring, return_exceptions=True)

    async def _sync_model(self, files: ModelFiles) -> None:
        """Load what the model's config wants, then put its policy in force, then unload what
        neither wants: a version stops serving only once what replaces it serves."""
        entry = self._models.get(files.name)
        if entry is None:
            entry = self._models[files.name] = ModelEntry(files.name)
        if files.config is None:
            if entry.config_error != files.config_error:
                log.error(
                    "model %s: %s; versions already serving stay", files.name, files.config_error
                )
                self._metrics.load_failures.labels(files.name).inc()
            entry.config_error = files.config_error
            return
        entry.config_error = None
        config = ModelConfig.resolve(files.config, self._settings)
        entry.config = config
        proposed = files.config.policy()
        # Both the policy in force and the one proposed: the first serves until the second can.
        labelled = set(proposed.version_labels.values()) | self._labelled(entry)

        def key(v: int) -> tuple[object, ...]:
            return (files.versions[v].fingerprint, config)

        def failed_as_is(v: int) -> bool:
            record = entry.versions.get(v)
            return record is not None and record.state == "failed" and record.load_key == key(v)

        def to_load(v: int) -> bool:
            """Not serving, or serving other files or config than these, not yet tried."""
            record = entry.versions.get(v)
            if record is None or record.serving is None:
                return True
            return key(v) not in (record.serving.load_key, record.load_key)

        self._note_serving_files(entry, files, key)
        candidates = {v for v in files.versions if not failed_as_is(v)}
        while True:
            # Labelled versions serve whatever the version policy says.
            wanted = select_versions(config.version_policy, candidates) | (labelled & candidates)
            stale = [v for v in wanted if to_load(v)]
            if not stale:
                break
            for version in sorted(stale, reverse=True):
                loaded = await self._load(entry, files.versions[version], config, key(version))
                if not loaded and version not in entry.served:
                    candidates.discard(version)
        self._put_in_force(entry, proposed)
        keep = (
            select_versions(config.version_policy, candidates)
            | (set(proposed.version_labels.values()) & candidates)
            | self._labelled(entry)
        )
        if not keep & set(entry.served):
            # What the policy wants failed to load: what serves and is still on disk stays.
            keep |= set(entry.served) & set(files.versions)
        for version in list(entry.served):
            if version not in keep:
                self._retire(entry, version)
        for version, record in list(entry.versions.items()):
            if version not in files.versions and record.serving is None:
                del entry.versions[version]

    @staticmethod
    def _labelled(entry: ModelEntry) -> set[int]:
        """The versions the policy in force names: they serve as long as it is in force."""
        return set() if entry.policy is None else set(entry.policy.config.version_labels.values())

    @staticmethod
    def _note_serving_files(
        entry: ModelEntry, files: ModelFiles, key: Callable[[int], tuple[object, ...]]
    ) -> None:
        """Say, for each version serving, whether the files on disk are still the ones it
        serves: the folder may be gone (a labelled version of the policy in force serves on)
        or its files back as they were after a failed replacement."""
        for version, record in entry.versions.items():
            if record.serving is None or record.state != "ready":
                continue
            if version not in files.versions:
                record.reason = (
                    "its folder is gone; it serves while the traffic policy in force names it"
                )
            elif record.serving.load_key == key(version):
                record.load_key, record.reason = key(version), None

    def _put_in_force(self, entry: ModelEntry, proposed: ModelPolicyConfig) -> None:
        """Make config.json's policy keys the policy in force once every version they name
        serves; until then the policy in force stays, and the wait is an error of the model."""
        if entry.policy is not None and entry.policy.config == proposed:
            entry.policy_error = None
            return
        missing = [
            f"{label!r} names version {version}, which {self._state_of(entry, version)}"
            for label, version in proposed.version_labels.items()
            if version not in entry.served
        ]
        if missing:
            error = (
                "the traffic policy of config.json is refused (version_labels "
                f"{'; '.join(missing)}); "
                + ("the previous policy serves" if entry.policy else "the model serves nothing")
            )
            if entry.policy_error != error:
                log.error("model %s: %s", entry.name, error)
                self._metrics.load_failures.labels(entry.name).inc()
            entry.policy_error = error
            return
        if entry.policy is not None:
            entry.policy.close()
            log.info("model %s: a new traffic policy is in force", entry.name)
        entry.policy = ModelPolicy(entry.name, proposed, self._metrics)
        entry.policy_error = None

    async def _load(
        self, entry: ModelEntry, files: VersionFiles, config: ModelConfig, key: tuple[object, ...]
    ) -> bool:
        name, version = entry.name, files.version
        record = entry.versions.setdefault(version, VersionRecord("loading"))
        record.state, record.reason, record.load_key = "loading", None, key
        log.info("loading %s version %d", name, version)
        try:
            artifacts = await asyncio.to_thread(
                load_version, files, config, self._settings, self._cpu_gate, self._decoder
            )
        except Exception as exc:  # a broken model must never stop the server
            reason = str(exc) if isinstance(exc, ContractError) else f"{type(exc).__name__}: {exc}"
            self._metrics.load_failures.labels(name).inc()
            if record.serving is None:
                log.error("model %s version %d failed to load: %s", name, version, reason)
                record.state, record.reason = "failed", reason
                return False
            # Its files changed in place and the new ones are not a complete, valid version
            # (a copy under way, say): the session loaded before keeps serving.
            log.error(
                "model %s version %d failed to load again: %s; the version loaded before "
                "serves on until its files load",
                name,
                version,
                reason,
            )
            record.state = "ready"
            record.reason = f"its files on disk do not load ({reason}); those loaded before serve"
            return False

        def on_batcher_failure(reason: str) -> None:
            self._fail_serving(entry, served, reason)

        batcher = self._make_batcher(name, version, config, artifacts, on_batcher_failure)
        served = ServedVersion(name, version, config, artifacts, batcher)
        served.idle.set()
        previous = record.serving
        record.state, record.serving = "ready", served  # the atomic switch
        self._metrics.version_ready.labels(name, str(version)).set(1)
        if previous is not None:
            self._drain_in_background(previous)
        log.info("serving %s version %d on %s", name, version, artifacts.classifier.providers[0])
        return True

    def _retire(self, entry: ModelEntry, version: int) -> None:
        record = entry.versions[version]
        served = record.serving
        assert served is not None
        record.state, record.serving = "unloading", None
        self._forget_gauges(entry, version)
        log.info("unloading %s version %d after its in-flight requests", entry.name, version)

        def forget() -> None:
            if entry.versions.get(version) is record and record.state == "unloading":
                del entry.versions[version]

        self._drain_in_background(served, on_done=forget)

    def _fail_serving(self, entry: ModelEntry, served: ServedVersion, reason: str) -> None:
        """A serving version's batcher died: take it out of routing and say why, everywhere."""
        record = entry.versions.get(served.version)
        if record is None or record.serving is not served:
            return  # already replaced or retired
        record.state, record.reason, record.serving = "failed", reason, None
        self._forget_gauges(entry, served.version)
        self._metrics.version_failures.labels(entry.name).inc()
        self._metrics.models_loaded.set(sum(1 for e in self._models.values() if e.served))
        log.error(
            "model %s version %d stopped serving: %s; it is reloaded when its files change",
            entry.name,
            served.version,
            reason,
        )
        self._drain_in_background(served)

    def _forget_gauges(self, entry: ModelEntry, version: int) -> None:
        name = entry.name
        if entry.policy is not None:
            entry.policy.forget_version(version)
        for gauge in (
            self._metrics.version_ready,
            self._metrics.queue_depth,
            self._metrics.queue_capacity,
        ):
            self._metrics.forget(gauge, name, str(version))

    def _drain_in_background(
        self, served: ServedVersion, on_done: Callable[[], None] | None = None
    ) -> None:
        async def drain() -> None:
            await served.idle.wait()
            await served.batcher.close()
            if on_done is not None:
                on_done()

        task = asyncio.get_running_loop().create_task(drain())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    def _make_batcher(
        self,
        name: str,
        version: int,
        config: ModelConfig,
        artifacts: VersionArtifacts,
        on_failure: Callable[[str], None],
    ) -> DynamicBatcher[Scores]:
        labels = (name, str(version))
        m = self._metrics
        m.queue_capacity.labels(*labels).set(config.max_queue_size)
        m.queue_depth.labels(*labels).set(0)

        def on_batch(size: int, seconds: float) -> None:
            m.batches.labels(*labels).inc()
            m.images.labels(*labels).inc(size)
            m.batch_size.labels(*labels).observe(size)
            m.inference_seconds.labels(*labels).observe(seconds)

        def on_queue_wait(waits: list[float]) -> None:
            histogram = m.queue_wait_seconds.labels(*labels)
            for wait in waits:
                histogram.observe(wait)

        return DynamicBatcher(
            ranked(artifacts.classifier.run),
            BatcherConfig(
                artifacts.classifier.batch_limit(config.max_batch_size),
                config.max_queue_delay_ms,
                config.max_queue_size,
                concurrency=artifacts.classifier.instances,
            ),
            BatchObserver(on_batch, on_queue_wait, m.queue_depth.labels(*labels).set, on_failure),
        )

    @classmethod
    def _not_serving(cls, entry: ModelEntry) -> str:
        """Why a request naming `entry` and no version finds nothing to answer it."""
        if entry.served and entry.policy is None:
            return f"model {entry.name!r} has no traffic policy in force{cls._why(entry)}"
        return f"model {entry.name!r} has no version ready{cls._why(entry)}"

    @staticmethod
    def _state_of(entry: ModelEntry, version: int) -> str:
        """What became of a version that does not serve, as the end of a sentence."""
        record = entry.versions.get(version)
        if record is None:
            return "is not in the repository"
        if record.state == "failed":
            return f"failed: {record.reason}"
        return f"is {record.state}"

    @staticmethod
    def _why(entry: ModelEntry) -> str:
        errors = [e for e in (entry.config_error, entry.policy_error) if e]
        errors += [
            f"v{v}: {r.reason}" for v, r in sorted(entry.versions.items()) if r.state == "failed"
        ]
        return f" ({'; '.join(errors)})" if errors else ""
