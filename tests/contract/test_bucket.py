"""The bucket repository contract against a real S3 API (moto's server on loopback): URLs,
the completion marker, claimed version numbers, card.json uploaded last, clear store errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from buckets import S3Store

from roost.contract import bucket
from roost.contract.errors import ContractError
from roost.contract.publish import Release, publish_to_bucket


@pytest.mark.parametrize(
    ("url", "name", "prefix"),
    [
        ("s3://models", "models", ""),
        ("s3://models/", "models", ""),
        ("s3://models/team/repo", "models", "team/repo/"),
        ("s3://models/team/repo/", "models", "team/repo/"),
    ],
)
def test_bucket_urls(url: str, name: str, prefix: str) -> None:
    location = bucket.BucketLocation.parse(url)
    assert (location.bucket, location.prefix) == (name, prefix)
    assert location.key("a/1/card.json") == f"{prefix}a/1/card.json"


@pytest.mark.parametrize("url", ["s3://", "s3:///x", "/srv/models", "gs://b/p"])
def test_bad_bucket_urls_are_refused(url: str) -> None:
    with pytest.raises(ContractError):
        bucket.BucketLocation.parse(url)


def test_a_version_is_complete_once_its_card_is_stored(s3_store: S3Store, tmp_path: Path) -> None:
    s3_store.bucket("models")
    client = s3_store.client()
    for key in ("p/cats/1/model.onnx", "p/cats/1/card.json", "p/cats/2/model.onnx",
                "p/cats/2/labels.txt", "p/cats/3/.claim", "p/cats/x/card.json",
                "p/cats/config.json", "p/repository.json", "p/.hidden/1/card.json"):  # fmt: skip
        client.put_object(Bucket="models", Key=key, Body=b"{}")
    location = bucket.BucketLocation.parse("s3://models/p")
    objects = bucket.list_objects(bucket.s3_client(), location)
    assert "cats/1/card.json" in objects and objects["cats/1/card.json"].etag
    assert bucket.complete_versions(objects) == {"cats": {1}}
    assert bucket.version_files(objects, "cats", 2) == ["labels.txt", "model.onnx"]


def _release() -> Release:
    return Release(onnx=b"not really onnx", labels=["a", "b"], image_size=(8, 8), resize="stretch")


def test_publish_claims_the_next_number_and_uploads_the_card_last(
    s3_store: S3Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3_store.bucket("models")
    client = s3_store.client()
    client.put_object(Bucket="models", Key="repo/cats/4/.claim", Body=b"")  # another publisher
    uploaded: list[str] = []
    real_upload = bucket.upload_version

    def recording_upload(client, location, model, version, folder):  # type: ignore[no-untyped-def]
        original = client.upload_file
        client.upload_file = lambda path, b, key: (uploaded.append(key), original(path, b, key))
        return real_upload(client, location, model, version, folder)

    monkeypatch.setattr("roost.contract.publish.upload_version", recording_upload)
    url = publish_to_bucket("s3://models/repo", "cats", _release())
    assert url == "s3://models/repo/cats/5"
    assert uploaded[-1] == "repo/cats/5/card.json"
    assert set(uploaded) == {"repo/cats/5/model.onnx", "repo/cats/5/labels.txt",
                             "repo/cats/5/card.json"}  # fmt: skip
    objects = bucket.list_objects(client, bucket.BucketLocation.parse("s3://models/repo"))
    assert bucket.complete_versions(objects) == {"cats": {5}}
    with bucket.local_copy(client, bucket.BucketLocation.parse("s3://models/repo"), "cats", 5) as f:
        assert (f / "model.onnx").read_bytes() == b"not really onnx"
        assert '"version": 5' in (f / "card.json").read_text().replace('":5', '": 5')


def test_store_errors_name_the_bucket_and_the_cause(s3_store: S3Store) -> None:
    location = bucket.BucketLocation.parse("s3://missing-bucket/p")
    with pytest.raises(bucket.StoreError, match=r"s3://missing-bucket/p/.*NoSuchBucket"):
        bucket.list_objects(bucket.s3_client(), location)
    s3_store.stop()
    with pytest.raises(bucket.StoreError, match="s3://missing-bucket/p/"):
        bucket.list_objects(bucket.s3_client(), location)
