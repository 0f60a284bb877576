"""The offline photos: calibration and check sets kept apart, decoded as the server decodes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.release import photos
from training.release.errors import ReleaseError


def test_split_photos_keeps_calibration_and_check_apart() -> None:
    pool = [
        photos.Photo("wallpapers", f"w{g}#{i}", f"w{g}", b"") for g in range(6) for i in range(5)
    ] + [photos.Photo("scikit-image", f"s{i}", f"s{i}", b"") for i in range(20)]
    cal, check = photos.split_photos(pool, 15, 30, seed=3)
    assert len(cal) == 15 and len(check) == 30
    assert not {p.group for p in cal} & {p.group for p in check}
    assert photos.split_photos(pool, 15, 30, seed=3) == (cal, check)  # seeded
    cal, check = photos.split_photos(pool, 0, 10)
    assert cal == [] and len(check) == 10
    with pytest.raises(ReleaseError, match="not enough"):
        photos.split_photos(pool[:1], 5, 5)


def test_offline_photos_decode_through_the_serving_path(tmp_path: Path) -> None:
    from roost.contract.images import decode_image

    found = photos.offline_photos(stamps=tmp_path / "none", wallpapers=tmp_path / "none")
    assert {p.source for p in found} == {"scikit-image"} and len(found) >= 10
    images, kept = photos.decode_photos(found[:3], (40, 30), "center_crop")
    assert images.shape == (3, 40, 30, 3) and images.dtype == np.uint8
    assert (images[0] == decode_image(kept[0].data, (40, 30), "center_crop", 1 << 28)).all()
