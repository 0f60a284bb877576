"""`roost export` and `roost quantize` with `--repo s3://bucket/prefix`: the same rules as a
folder (the next number, none past the highest), card.json uploaded last, only complete versions
read, and a store that fails named in one line. Against moto's S3 server on loopback."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from roost.contract import bucket
from training.__main__ import main

sys.path.insert(0, str(Path(__file__).parents[2]))
sys.path.insert(0, str(Path(__file__).parent))
from buckets import S3Store  # noqa: E402
from modelkit import publish as publish_fixture  # noqa: E402
from release_helpers import _colour_photos, _load_in_server  # noqa: E402

TRAINING = [
    pytest.mark.training,
    # Keras' TensorFlow backend converting tensors under NumPy 2 (harmless, thousands of lines).
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword"),
    pytest.mark.filterwarnings("ignore:In the future `np.object`:FutureWarning"),
]
REPO = "s3://models/repo"
Test = TypeVar("Test", bound=Callable[..., None])


def training(test: Test) -> Test:
    """Marked `training` (the train extra: TensorFlow, ONNX's quantisation)."""
    for mark in reversed(TRAINING):
        test = mark(test)
    return test


def _objects(store: S3Store, url: str = REPO) -> dict[str, bucket.StoredObject]:
    return bucket.list_objects(store.client(), bucket.BucketLocation.parse(url))


def _card(store: S3Store, key: str) -> Any:
    return json.loads(store.client().get_object(Bucket="models", Key=key)["Body"].read())


@training
def test_export_twice_then_quantize_from_the_bucket(
    s3_store: S3Store,
    trained_run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from photo_data import make_photo_dataset

    s3_store.bucket("models")
    for version in (1, 2):
        assert main(["export", str(trained_run), "--repo", REPO, "--name", "photos"]) == 0
        assert f"published {REPO}/photos/{version} (" in capsys.readouterr().out
    export = json.loads((trained_run / "export.json").read_text())
    assert export["published"] == f"{REPO}/photos/2"

    objects = _objects(s3_store)
    assert bucket.complete_versions(objects) == {"photos": {1, 2}}
    for version in (1, 2):
        files = bucket.version_files(objects, "photos", version)
        assert {"model.onnx", "labels.txt", "card.json"} <= set(files)
        assert [f for f in files if f.startswith("references/")]  # the reference images
        assert f"photos/{version}/.claim" in objects  # the number was claimed first
        card = _card(s3_store, f"repo/photos/{version}/card.json")
        assert card["version"] == version and card["name"] == "photos"
        model = s3_store.client().get_object(
            Bucket="models", Key=f"repo/photos/{version}/model.onnx"
        )
        assert card["sha256"] == hashlib.sha256(model["Body"].read()).hexdigest()
        for ref in card["references"]:
            assert f"photos/{version}/{ref['file']}" in objects

    more = make_photo_dataset(tmp_path / "more", per_class=60, size=48, seed=3)  # >= 50 to check
    argv = ["quantize", "photos", "--repo", REPO, "--images", str(more)]
    # --force: a tiny, briefly trained net; the figures are recorded either way.
    assert main([*argv, "--force"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"{REPO}/photos/3"
    card = _card(s3_store, "repo/photos/3/card.json")
    first = _card(s3_store, "repo/photos/2/card.json")
    assert card["version"] == 3 and card["precision"] == "int8"
    assert card["quantization"]["from_version"] == 2
    assert card["quantization"]["from_sha256"] == first["sha256"]
    assert bucket.complete_versions(_objects(s3_store)) == {"photos": {1, 2, 3}}

    # What the bucket holds loads in the server (card, checksum, contract, the references).
    location = bucket.BucketLocation.parse(REPO)
    folder = tmp_path / "repo" / "photos" / "3"
    with bucket.local_copy(s3_store.client(), location, "photos", 3) as copy:
        shutil.copytree(copy, folder)
    assert _load_in_server(tmp_path / "repo", "photos", 3).card.details["precision"] == "int8"


@training
def test_a_half_uploaded_version_is_never_read_and_its_number_stays_taken(
    s3_store: S3Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A version folder without card.json (a publisher that stopped half way) is not a source;
    its number was claimed, so the next version is above it (bucket.claim_version counts every
    version folder)."""
    s3_store.bucket("models")
    publish_fixture(tmp_path / "local", "colours", 1)
    s3_store.upload_tree(tmp_path / "local", "models", "repo/")
    client = s3_store.client()
    client.put_object(Bucket="models", Key="repo/colours/9/model.onnx", Body=b"half uploaded")
    photos = _colour_photos(tmp_path / "photos", count=160)
    argv = ["--repo", REPO, "--images", str(photos), "--calibration", "100"]

    assert main(["quantize", "colours", *argv]) == 0
    assert capsys.readouterr().out.strip() == f"{REPO}/colours/10"
    card = _card(s3_store, "repo/colours/10/card.json")
    assert card["version"] == 10 and card["quantization"]["from_version"] == 1
    assert bucket.complete_versions(_objects(s3_store)) == {"colours": {1, 10}}

    # Named, the half-uploaded version does not exist (exit 2, like a version that is not there).
    assert main(["quantize", "colours:9", *argv]) == 2
    assert f"colours has no version 9 in {REPO} (it has 1, 10)" in capsys.readouterr().err
    # Past the highest version number a bucket refuses, as a folder does.
    client.put_object(Bucket="models", Key="repo/colours/999999999/.claim", Body=b"")
    assert main(["quantize", "colours:1", *argv]) == 1
    err = capsys.readouterr().err
    assert "is at version 999999999, the highest" in err and REPO in err
    assert bucket.complete_versions(_objects(s3_store)) == {"colours": {1, 10}}

    # Without version 1's card, only the int8 version is left: none to start from.
    client.delete_object(Bucket="models", Key="repo/colours/1/card.json")
    assert main(["quantize", "colours", *argv]) == 2
    assert f"colours has no float32 version in {REPO}" in capsys.readouterr().err


def test_a_stopped_store_is_one_line_naming_the_bucket(
    s3_store: S3Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    s3_store.bucket("models")
    s3_store.stop()
    # export looks at the bucket before it loads the run (there is none here).
    assert main(["export", str(tmp_path / "run"), "--repo", REPO, "--name", "photos"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: listing s3://models/repo/: ") and "Traceback" not in err
    assert main(["quantize", "photos", "--repo", REPO]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: listing s3://models/repo/: ") and "Traceback" not in err

    # The command as a user runs it: one line on stderr, exit 1.
    env = {**os.environ, **s3_store.environment()}
    result = subprocess.run(
        [sys.executable, "-m", "training", "quantize", "photos", "--repo", REPO],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("error: listing s3://models/repo/: ")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_missing_bucket_is_named(s3_store: S3Store, capsys: pytest.CaptureFixture[str]) -> None:
    url = "s3://missing-bucket/repo"
    assert main(["export", "runs/none", "--repo", url, "--name", "photos"]) == 1
    err = capsys.readouterr().err
    assert "s3://missing-bucket/repo/" in err and "NoSuchBucket" in err
    assert len(err.strip().splitlines()) == 1
    assert main(["quantize", "photos", "--repo", url]) == 1
    err = capsys.readouterr().err
    assert "s3://missing-bucket/repo/" in err and "NoSuchBucket" in err


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("s3://", "names no bucket"),
        ("s3:///repo", "names no bucket"),
        ("s3:/models/repo", "a folder or s3://BUCKET/PREFIX"),
        ("gs://models/repo", "a folder or s3://BUCKET/PREFIX"),
    ],
)
@pytest.mark.parametrize("command", [["export", "runs/x", "--name", "p"], ["quantize", "p"]])
def test_a_malformed_bucket_url_is_a_usage_error(
    url: str, message: str, command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*command, "--repo", url])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "argument --repo" in err and message in err


def test_profile_writes_into_a_version_and_takes_a_folder_only(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["profile", "p", "--natural-photos", "--repo", REPO])
    assert exc.value.code == 2
    assert "folder repository" in capsys.readouterr().err
