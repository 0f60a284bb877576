"""Where ``roost export`` and ``roost quantize`` publish and read: a folder, or a bucket.

``--repo`` is a folder (a :class:`~pathlib.Path`) or ``s3://bucket/prefix`` (a ``str``,
:mod:`roost.contract.bucket`). Both follow the same rules: the next version number, none past
the highest. Into a bucket the number is claimed first and card.json, the completion marker, is
uploaded last; a stored version is read only once its card.json is there, from a local copy.
boto3 (the ``s3`` extra) is imported only when a bucket is used.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeGuard

from roost.contract.bucket import (
    BucketLocation,
    complete_versions,
    download,
    is_bucket_url,
    list_objects,
    local_copy,
    s3_client,
)
from roost.contract.card import ModelCard, read_card
from roost.contract.errors import ContractError
from roost.contract.layout import CARD_FILE, version_folders
from roost.contract.publish import Release, publish, publish_to_bucket
from training.release.errors import ReleaseError

Repository = Path | str
"""A folder, or an ``s3://bucket/prefix`` URL (only URLs are ``str``)."""

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
S3_EXTRA = 'pip install "roost[train,s3]"'


def parse_repository(text: str) -> Repository:
    """``--repo``: an ``s3://bucket/prefix`` URL as it is, anything else as a folder. Raises
    ContractError for a malformed s3 URL or another scheme (``gs://``, ``s3:/bucket``)."""
    if is_bucket_url(text):
        BucketLocation.parse(text)  # names a bucket
        return text
    if _SCHEME.match(text) and (text.lower().startswith("s3:") or "://" in text):
        raise ContractError(f"{text!r}: a repository is a folder or s3://BUCKET/PREFIX")
    return Path(text)


def is_bucket(repo: Repository) -> TypeGuard[str]:
    """``repo`` is an ``s3://`` URL."""
    return is_bucket_url(repo)


def _require_boto3(url: str) -> None:
    try:
        import boto3  # noqa: F401
    except ImportError as exc:
        raise ReleaseError(f"{url} is a bucket and boto3 is not installed ({S3_EXTRA})") from exc


def _bucket(url: str) -> tuple[Any, BucketLocation]:
    location = BucketLocation.parse(url)
    _require_boto3(url)
    return s3_client(), location


def check_repository(repo: Repository) -> None:
    """A bucket is listed once, so an unreachable store, refused credentials or a missing
    bucket stop a command before its work rather than at the publish (StoreError). A folder
    is created by the publish."""
    if is_bucket(repo):
        client, location = _bucket(repo)
        list_objects(client, location)


def publish_version(repo: Repository, name: str, release: Release) -> Path | str:
    """``release`` as the next version of ``name``: the version folder, or its URL."""
    if not is_bucket(repo):
        return publish(Path(repo), name, release)
    _require_boto3(repo)
    return publish_to_bucket(repo, name, release)


def stored_versions(repo: Repository, name: str) -> dict[int, str]:
    """The versions of ``name`` and where each is: every version folder of a folder
    repository; in a bucket, only the complete ones (card.json stored)."""
    if not is_bucket(repo):
        return {v: str(folder) for v, folder in version_folders(Path(repo) / name).items()}
    client, location = _bucket(repo)
    versions = sorted(complete_versions(list_objects(client, location)).get(name, set()))
    return {v: f"{location}{name}/{v}" for v in versions}


def stored_card(repo: Repository, name: str, version: int) -> ModelCard:
    """One version's card (from a bucket: its card.json alone is downloaded)."""
    if not is_bucket(repo):
        return read_card(Path(repo) / name / str(version))
    client, location = _bucket(repo)
    with tempfile.TemporaryDirectory(prefix="roost-card-") as folder:
        download(client, location, f"{name}/{version}/{CARD_FILE}", Path(folder) / CARD_FILE)
        return read_card(Path(folder))


@contextmanager
def version_folder(repo: Repository, name: str, version: int) -> Iterator[Path]:
    """A local folder holding the version: the repository's own, or a bucket's version
    downloaded into a temporary folder (removed after the block)."""
    if not is_bucket(repo):
        yield Path(repo) / name / str(version)
        return
    client, location = _bucket(repo)
    with local_copy(client, location, name, version) as folder:
        yield folder
