"""A small 10-class data set drawn at test time: letters in the DejaVu fonts, on random colours.

Several classes are mirror images of each other (b/d, p/q), so a horizontal flip changes the
class: the set a flip-by-default augmentation gets wrong.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

LETTERS = ("b", "d", "p", "q", "e", "f", "g", "h", "k", "r")
FONT_FOLDER = Path("/usr/share/fonts/truetype/dejavu")


def fonts() -> list[Path]:
    """The DejaVu font files here (Debian's fonts-dejavu-core / -extra), sorted."""
    return sorted(FONT_FOLDER.glob("DejaVu*.ttf"))


def make_letter_dataset(
    dest: Path,
    per_class: int = 30,
    size: int = 32,
    seed: int = 0,
    letters: tuple[str, ...] = LETTERS,
    colours: bool = True,
) -> Path:
    """``dest/<letter>/<i>.png``: each letter in a random font, size, place and tilt, in random
    colours (``colours``) or dark ink on light paper (an easier set)."""
    rng = np.random.default_rng(seed)
    faces = fonts()
    if not faces:
        raise FileNotFoundError(f"no DejaVu fonts under {FONT_FOLDER}")
    canvas = size * 2  # drawn large, then reduced: smooth edges
    for letter in letters:
        folder = Path(dest) / letter
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            if colours:
                background = tuple(int(v) for v in rng.integers(0, 256, 3))
                # a foreground far enough from the background to read
                foreground = tuple(int((b + rng.integers(90, 166)) % 256) for b in background)
            else:
                background = tuple(int(v) for v in rng.integers(200, 256, 3))
                foreground = tuple(int(v) for v in rng.integers(0, 60, 3))
            image = Image.new("RGB", (canvas, canvas), background)
            font = ImageFont.truetype(
                str(faces[rng.integers(len(faces))]), int(canvas * rng.uniform(0.5, 0.8))
            )
            draw = ImageDraw.Draw(image)
            left, top, right, bottom = draw.textbbox((0, 0), letter, font=font)
            x = (canvas - (right - left)) / 2 - left + rng.uniform(-0.12, 0.12) * canvas
            y = (canvas - (bottom - top)) / 2 - top + rng.uniform(-0.12, 0.12) * canvas
            draw.text((x, y), letter, font=font, fill=foreground)
            image = image.rotate(float(rng.uniform(-15, 15)), fillcolor=background)
            noisy = np.asarray(image, np.int16) + rng.integers(-12, 13, (canvas, canvas, 3))
            out = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
            out.resize((size, size), Image.Resampling.BILINEAR).save(folder / f"{index:03d}.png")
    return Path(dest)
