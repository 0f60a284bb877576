"""Where the model repository lives: a folder, or an S3 bucket (`s3://bucket/prefix`) mirrored
into a local cache folder that the scanner then reads as it reads any folder.

The mirror gives a bucket the guarantees of a folder. A version appears in the cache only once
its card.json is stored (roost/contract/bucket.py), and whole: a new version is downloaded into
a staging folder and renamed into place. Each refresh lists the bucket (one LIST call per
1,000 objects) and downloads only objects whose ETag changed, so an idle repository costs a
few list calls per poll. Files and versions that left the bucket leave the cache. The loader
then checks model.onnx's sha256 against card.json and runs the reference images, as for a
folder, and a version that fails never replaces one that serves.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Protocol

from roost.contract.bucket import (
    BucketLocation,
    StoredObject,
    complete_versions,
    download,
    is_bucket_url,
    is_repository_path,
    list_objects,
    s3_client,
)
from roost.contract.layout import CONFIG_FILE, REPOSITORY_FILE, version_of

log = logging.getLogger(__name__)

STAGING = ".staging"
"""The cache folder's own staging area (a dot name: never a model, never scanned)."""


class RepositorySource(Protocol):
    description: str
    """The repository as an operator named it: a folder path or an s3:// URL."""
    remote: bool
    """Read over the network (a store that can be unreachable), not a local folder."""

    def refresh(self) -> Path:
        """The local folder to scan, brought up to date. Raises StoreError when the store
        cannot be read; the folder then keeps what the last refresh brought."""
        ...


class FolderSource:
    remote = False

    def __init__(self, root: Path) -> None:
        self.root = root
        self.description = str(root)

    def refresh(self) -> Path:
        return self.root


class BucketMirror:
    """A bucket repository kept in `cache_dir` (a folder the server owns: what is in it that
    the bucket does not hold is deleted)."""

    remote = True

    def __init__(self, url: str, cache_dir: Path, max_bytes: int = 0, client: Any = None) -> None:
        """`max_bytes`: the most the mirrored versions may hold (0: no bound); versions that
        would pass it are left out, oldest first."""
        self.location = BucketLocation.parse(url)
        self.description = str(self.location)
        self.cache_dir = cache_dir
        self.max_bytes = max_bytes
        self._left_out: set[tuple[str, int]] = set()
        self._client = client
        self._etags: dict[str, str] = {}
        """What the cache holds: relative path -> the ETag it was downloaded at. Empty at
        start, so files an earlier process left are downloaded again or removed."""
        shutil.rmtree(cache_dir / STAGING, ignore_errors=True)

    def refresh(self) -> Path:
        if self._client is None:
            self._client = s3_client()
        objects = list_objects(self._client, self.location)
        wanted = self._repository_objects(objects)
        self._download_changed(wanted)
        self._remove_left(wanted)
        return self.cache_dir

    def _repository_objects(self, objects: dict[str, StoredObject]) -> dict[str, StoredObject]:
        """repository.json, each model's config.json, and the files of complete versions: the
        newest of every model first, then the next newest, ..., while `max_bytes` allows."""
        complete = complete_versions(objects)
        wanted = {}
        files: dict[tuple[str, int], list[StoredObject]] = {}
        for path, stored in objects.items():
            if not is_repository_path(path):
                continue
            parts = path.split("/")
            if parts == [REPOSITORY_FILE] or (len(parts) == 2 and parts[1] == CONFIG_FILE):
                wanted[path] = stored
            elif len(parts) >= 3 and (version := version_of(parts[1])) in complete.get(
                parts[0], set()
            ):
                files.setdefault((parts[0], version), []).append(stored)
        age = {  # 0 for each model's newest complete version, 1 for the next, ...
            (model, version): rank
            for model, versions in complete.items()
            for rank, version in enumerate(sorted(versions, reverse=True))
        }
        newest_first = sorted(files, key=lambda mv: (age[mv], mv[0]))
        held = sum(stored.size for stored in wanted.values())
        for model, version in newest_first:
            size = sum(stored.size for stored in files[(model, version)])
            if self.max_bytes and held + size > self.max_bytes:
                if (model, version) not in self._left_out:
                    log.warning(
                        "%s%s/%s is not mirrored: the cache would pass ROOST_MODEL_CACHE_MAX_BYTES "
                        "(%d bytes)", self.location, model, version, self.max_bytes,
                    )  # fmt: skip
                    self._left_out.add((model, version))
                continue
            held += size
            wanted.update({stored.path: stored for stored in files[(model, version)]})
        return wanted

    def _download_changed(self, wanted: dict[str, StoredObject]) -> None:
        changed = [p for p, s in wanted.items() if self._etags.get(p) != s.etag]
        new_versions: dict[str, list[str]] = {}
        for path in changed:
            parts = path.split("/")
            version_folder = "/".join(parts[:2]) if len(parts) >= 3 else None
            if version_folder is not None and not (self.cache_dir / version_folder).exists():
                new_versions.setdefault(version_folder, []).append(path)
            else:
                download(self._client, self.location, path, self.cache_dir / path)
                self._etags[path] = wanted[path].etag
        for version_folder, paths in new_versions.items():
            self._download_version(version_folder, paths, wanted)

    def _download_version(
        self, version_folder: str, paths: list[str], wanted: dict[str, StoredObject]
    ) -> None:
        """A version new to the cache, whole into staging, then renamed into place."""
        staging_root = self.cache_dir / STAGING
        staging_root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=staging_root))
        try:
            for path in paths:
                relative = path[len(version_folder) + 1 :]
                download(self._client, self.location, path, staging / relative)
            target = self.cache_dir / version_folder
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(staging, target)
            target.chmod(0o755)  # mkdtemp makes it private
            for path in paths:
                self._etags[path] = wanted[path].etag
            log.info("downloaded %s%s from the model store", self.location, version_folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _remove_left(self, wanted: dict[str, StoredObject]) -> None:
        """Files the bucket no longer holds (or that an earlier process left), then the
        folders left empty: a version that left the bucket leaves the cache. One walk,
        deepest first, so a folder is looked at after what it held."""
        entries = [p for p in self.cache_dir.rglob("*") if not self._staged(p)]
        for entry in sorted(entries, key=lambda p: len(p.parts), reverse=True):
            if entry.is_dir():
                if not any(entry.iterdir()):
                    entry.rmdir()
            elif (path := entry.relative_to(self.cache_dir).as_posix()) not in wanted:
                entry.unlink(missing_ok=True)
                self._etags.pop(path, None)

    def _staged(self, path: Path) -> bool:
        return path.relative_to(self.cache_dir).parts[0] == STAGING


def open_source(
    model_repo: str, cache_dir: Path | None, cache_max_bytes: int = 0
) -> RepositorySource:
    """`model_repo` as given (ROOST_MODEL_REPO): an s3:// URL is mirrored into `cache_dir`
    (a new temporary folder when None), anything else is a folder.

    In a given `cache_dir` each server process mirrors into its own `process-<pid>` folder
    (ROOST_WORKERS: one mirror must not delete what another is downloading); the folders of
    processes that no longer run are removed."""
    if not is_bucket_url(model_repo):
        return FolderSource(Path(model_repo))
    if cache_dir is None:
        return BucketMirror(model_repo, Path(tempfile.mkdtemp(prefix="roost-model-cache-")),
                            cache_max_bytes)  # fmt: skip
    cache_dir.mkdir(parents=True, exist_ok=True)
    for folder in cache_dir.glob("process-*"):
        pid = folder.name.removeprefix("process-")
        if pid.isdigit() and int(pid) != os.getpid() and not _running(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
    own = cache_dir / f"process-{os.getpid()}"
    own.mkdir(exist_ok=True)
    return BucketMirror(model_repo, own, cache_max_bytes)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True
