"""A model repository in an S3 bucket: `s3://bucket/prefix`, laid out as a folder repository.

Objects are `<prefix>repository.json`, `<prefix><model>/config.json` and
`<prefix><model>/<version>/<file>` (model.onnx, labels.txt, card.json, references/...).
S3 has no atomic rename, so the contract names a completion marker: **a version exists once its
card.json does.** Publishers upload it last; servers ignore a version folder without it (a
half-uploaded version). A publisher claims its version number first with a conditional put of
`<model>/<version>/.claim` (If-None-Match), so two publishers never write the same number.
Object names starting with a dot are not part of the repository.

Access is boto3's with the standard AWS configuration: credentials and region from the
environment, profiles, or instance and pod roles; `AWS_ENDPOINT_URL` (or
`AWS_ENDPOINT_URL_S3`) for any S3-compatible store (MinIO, Ceph, R2, GCS's interoperability
API). boto3 is imported when a bucket is used (the `s3` extra).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from roost.contract.errors import ContractError
from roost.contract.layout import CARD_FILE, MAX_VERSION, check_model_name, version_of

SCHEME = "s3://"
CLAIM_FILE = ".claim"


class StoreError(ContractError):
    """The store could not be read or written: unreachable, credentials refused, throttled
    past the retries, or a missing bucket. The message names the bucket and the cause."""


def is_bucket_url(repo: str | Path) -> bool:
    return isinstance(repo, str) and repo.startswith(SCHEME)


@dataclass(frozen=True)
class BucketLocation:
    bucket: str
    prefix: str
    """Empty, or ending in "/"."""

    @classmethod
    def parse(cls, url: str) -> BucketLocation:
        if not is_bucket_url(url):
            raise ContractError(f"{url!r} is not an s3:// URL")
        bucket, _, prefix = url[len(SCHEME) :].partition("/")
        if not bucket:
            raise ContractError(f"{url!r} names no bucket")
        prefix = prefix.strip("/")
        return cls(bucket, f"{prefix}/" if prefix else "")

    def key(self, relative: str) -> str:
        return self.prefix + relative

    def __str__(self) -> str:
        return f"{SCHEME}{self.bucket}/{self.prefix}"


@dataclass(frozen=True)
class StoredObject:
    path: str
    """Relative to the repository's prefix, "/"-separated."""
    etag: str
    size: int


def s3_client() -> Any:
    """An S3 client from the standard AWS configuration, with the standard retry mode
    (exponential backoff on throttling and transient errors) and bounded timeouts."""
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"mode": "standard", "max_attempts": 5},
        connect_timeout=5,
        read_timeout=60,
    )
    return boto3.client("s3", config=config)


@contextmanager
def store_errors(location: BucketLocation, action: str) -> Iterator[None]:
    """boto3's and botocore's errors as a StoreError naming the bucket, the action and the
    cause (boto3's transfers raise their own, such as S3UploadFailedError)."""
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = error.get("Code", "error")
        raise StoreError(f"{action} {location}: {code}: {error.get('Message', exc)}") from exc
    except (BotoCoreError, Boto3Error) as exc:
        raise StoreError(f"{action} {location}: {exc}") from exc


def list_objects(client: Any, location: BucketLocation) -> dict[str, StoredObject]:
    """Every object under the prefix (one LIST call per 1,000), by relative path."""
    objects = {}
    with store_errors(location, "listing"):
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=location.bucket, Prefix=location.prefix
        )
        for page in pages:
            for item in page.get("Contents", []):
                path = item["Key"][len(location.prefix) :]
                objects[path] = StoredObject(path, item["ETag"], int(item["Size"]))
    return objects


def is_repository_path(path: str) -> bool:
    return bool(path) and not any(part.startswith(".") or not part for part in path.split("/"))


def complete_versions(objects: dict[str, StoredObject]) -> dict[str, set[int]]:
    """Per model, the versions whose card.json is stored (the completion marker)."""
    complete: dict[str, set[int]] = {}
    for path in objects:
        parts = path.split("/")
        if len(parts) == 3 and parts[2] == CARD_FILE and is_repository_path(path):
            version = version_of(parts[1])
            if version is not None:
                complete.setdefault(parts[0], set()).add(version)
    return complete


def version_files(objects: dict[str, StoredObject], model: str, version: int) -> list[str]:
    """The stored files of one version, relative to its folder."""
    folder = f"{model}/{version}/"
    return sorted(
        path[len(folder) :]
        for path in objects
        if path.startswith(folder) and is_repository_path(path)
    )


def download(client: Any, location: BucketLocation, path: str, target: Path) -> None:
    """One object to `target`, through a temporary file beside it (never a torn file)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".download-", dir=target.parent)
    try:
        with open(handle, "wb") as out, store_errors(location, f"downloading {path} from"):
            client.download_fileobj(location.bucket, location.key(path), out)
        Path(temporary).replace(target)
    finally:
        Path(temporary).unlink(missing_ok=True)


def download_version(
    client: Any, location: BucketLocation, model: str, version: int, target: Path
) -> Path:
    """A complete version into the folder `target` (created); raises if it is not complete."""
    objects = list_objects(client, location)
    if version not in complete_versions(objects).get(model, set()):
        raise ContractError(f"{location}{model}/{version} is not a complete version")
    for relative in version_files(objects, model, version):
        download(client, location, f"{model}/{version}/{relative}", target / relative)
    return target


def claim_version(client: Any, location: BucketLocation, model: str, max_attempts: int) -> int:
    """The next free version number of `model`, claimed by a conditional put of its .claim
    object: a number another publisher claimed first is skipped."""
    from botocore.exceptions import ClientError

    check_model_name(model)
    for _ in range(max_attempts):
        taken = {
            v
            for path in list_objects(client, location)
            if path.startswith(f"{model}/") and (v := version_of(path.split("/")[1])) is not None
        }
        version = max(taken, default=0) + 1
        if version > MAX_VERSION:
            raise ContractError(f"{location}{model} is at version {MAX_VERSION}, the highest")
        with store_errors(location, f"claiming {model}/{version} in"):
            try:
                client.put_object(
                    Bucket=location.bucket,
                    Key=location.key(f"{model}/{version}/{CLAIM_FILE}"),
                    Body=b"",
                    IfNoneMatch="*",
                )
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") == "PreconditionFailed":
                    continue
                raise
        return version
    raise ContractError(f"could not claim a version number of {model} in {location}")


def upload_version(
    client: Any, location: BucketLocation, model: str, version: int, folder: Path
) -> str:
    """Every file of the local version `folder`, card.json last; the version's URL."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    card = folder / CARD_FILE
    if card not in files:
        raise ContractError(f"{folder} has no {CARD_FILE}")
    files.remove(card)
    for path in [*files, card]:
        relative = path.relative_to(folder).as_posix()
        key = location.key(f"{model}/{version}/{relative}")
        with store_errors(location, f"uploading {model}/{version}/{relative} to"):
            client.upload_file(str(path), location.bucket, key)
    return f"{location}{model}/{version}"


@contextmanager
def local_copy(client: Any, location: BucketLocation, model: str, version: int) -> Iterator[Path]:
    """A complete stored version downloaded into a temporary folder for the block."""
    folder = Path(tempfile.mkdtemp(prefix=f"roost-{model}-{version}-"))
    try:
        yield download_version(client, location, model, version, folder / str(version))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
