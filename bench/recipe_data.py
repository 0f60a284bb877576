"""Offline image sets the training recipes are checked on, written as class folders at run time.

None of them is in git (the fonts and emoji are Debian's; the digits are scikit-learn's), and
none was used to tune a recipe (docs/training.md, "Recipes", says why each was chosen):

- ``digits``: scikit-learn's ``load_digits`` (1,797 handwritten 8 x 8 digits, 10 classes),
  scaled up to 32 x 32, white ink on black as in MNIST. Not pre-split (``roost train`` splits).
- ``font-digits``: the digits 0-9 in the typefaces of Debian's fonts-urw-base35,
  fonts-liberation, fonts-freefont-ttf, fonts-bwht (handwriting) and fonts-humor-sans (no
  DejaVu), in random ink and paper colours, size, place and tilt, 32 x 32. Split by typeface
  into ``train/ val/ test/``: the held-out digits are in typefaces the net never saw.
- ``emoji``: Debian's fonts-noto-color-emoji in 8 categories of Unicode's emoji-test.txt
  (unicode-data), each emoji drawn at several sizes and places on a random light background,
  128 x 128. Split by emoji: the held-out images are emoji the net never saw, so the task is
  the category (a mammal, a vehicle), not the picture.

Each writer returns the folder and leaves a ``.complete`` marker, so a second call reuses it.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

FONT_FOLDERS = (
    Path("/usr/share/fonts/opentype/urw-base35"),
    Path("/usr/share/fonts/truetype/liberation"),
    Path("/usr/share/fonts/truetype/freefont"),
    Path("/usr/share/fonts/opentype/bwht"),
    Path("/usr/share/fonts/truetype/humor-sans"),
)
EMOJI_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
EMOJI_TEST = Path("/usr/share/unicode/emoji/emoji-test.txt")
# class -> Unicode emoji subgroups: things an ImageNet model has seen photos of
EMOJI_CLASSES = {
    "mammal": ("animal-mammal",),
    "bird": ("animal-bird",),
    "vehicle": ("transport-ground", "transport-air"),
    "clothing": ("clothing",),
    "fruit_vegetable": ("food-fruit", "food-vegetable"),
    "prepared_food": ("food-prepared",),
    "building": ("place-building",),
    "sport": ("sport",),
}
EMOJI_PX = 109  # the one size Noto Color Emoji's bitmaps come in
SPLITS = ("train", "val", "test")


def _once(dest: Path, write: Callable[[Path], None]) -> Path:
    """Run ``write(dest)`` unless an earlier call finished it (a half-written folder is redone)."""
    done = dest / ".complete"
    if done.exists():
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    write(dest)
    done.touch()
    return dest


def _three_way(items: list, rng: np.random.Generator, val: float, test: float) -> dict[str, list]:
    """A seeded shuffle of ``items`` cut into train/val/test (each at least one item)."""
    order = [items[i] for i in rng.permutation(len(items))]
    n_test = max(1, round(len(order) * test))
    n_val = max(1, round(len(order) * val))
    return {
        "test": order[:n_test],
        "val": order[n_test : n_test + n_val],
        "train": order[n_test + n_val :],
    }


def digits(dest: Path, size: int = 32) -> Path:
    """scikit-learn's 1,797 handwritten digits as ``dest/<digit>/<i>.png``."""
    from PIL import Image
    from sklearn.datasets import load_digits

    def write(root: Path) -> None:
        bunch = load_digits()
        for index, (pixels, label) in enumerate(zip(bunch.images, bunch.target, strict=True)):
            # the 0..16 ink counts as 0..255 grey; bilinear keeps the strokes smooth at 32 px
            grey = Image.fromarray((pixels * (255 / 16)).astype(np.uint8))
            folder = root / str(label)
            folder.mkdir(exist_ok=True)
            grey.resize((size, size), Image.Resampling.BILINEAR).save(folder / f"{index:04d}.png")

    return _once(Path(dest), write)


def font_faces() -> list[Path]:
    """The OpenType/TrueType faces under :data:`FONT_FOLDERS` that are installed, sorted."""
    found = []
    for folder in FONT_FOLDERS:
        found += [p for p in folder.glob("*") if p.suffix.lower() in (".otf", ".ttf")]
    return sorted(found)


def _glyph(text: str, face: Path, size: int, rng: np.random.Generator) -> Image.Image:
    """One RGB image of ``text`` in ``face``: random colours (ink far from paper), scale,
    offset and tilt; drawn at twice the size and reduced, for smooth edges."""
    from PIL import Image, ImageDraw, ImageFont

    canvas = size * 2
    paper = rng.integers(0, 256, 3)
    ink = (paper + rng.integers(96, 160, 3)) % 256  # at least 96 levels from the paper
    font = ImageFont.truetype(str(face), int(canvas * rng.uniform(0.55, 0.85)))
    layer = Image.new("L", (canvas, canvas), 0)
    draw = ImageDraw.Draw(layer)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    x = (canvas - (right - left)) / 2 - left + rng.uniform(-0.1, 0.1) * canvas
    y = (canvas - (bottom - top)) / 2 - top + rng.uniform(-0.1, 0.1) * canvas
    draw.text((x, y), text, fill=255, font=font)
    layer = layer.rotate(float(rng.uniform(-12, 12)), resample=Image.Resampling.BILINEAR)
    image = Image.composite(
        Image.new("RGB", layer.size, tuple(int(c) for c in ink)),
        Image.new("RGB", layer.size, tuple(int(c) for c in paper)),
        layer,
    )
    return image.resize((size, size), Image.Resampling.LANCZOS)


def font_digits(dest: Path, per_face: int = 3, size: int = 32, seed: int = 0) -> Path:
    """``dest/{train,val,test}/<digit>/<face>-<i>.png``, split by typeface (70/15/15)."""
    faces = font_faces()
    if len(faces) < 3:
        raise FileNotFoundError(
            "font-digits needs Debian's fonts-urw-base35, fonts-liberation, fonts-freefont-ttf,"
            f" fonts-bwht, fonts-humor-sans (found {len(faces)} faces under {FONT_FOLDERS})"
        )

    def write(root: Path) -> None:
        rng = np.random.default_rng(seed)
        for split, chosen in _three_way(faces, rng, 0.15, 0.15).items():
            for face in chosen:
                for digit in "0123456789":
                    folder = root / split / digit
                    folder.mkdir(parents=True, exist_ok=True)
                    for i in range(per_face):
                        _glyph(digit, face, size, rng).save(folder / f"{face.stem}-{i}.png")

    return _once(Path(dest), write)


def emoji_by_class() -> dict[str, list[str]]:
    """Each class's emoji: fully-qualified single code points (an optional U+FE0F variation
    selector) in its subgroups, in emoji-test.txt's order."""
    if not (EMOJI_TEST.exists() and EMOJI_FONT.exists()):
        raise FileNotFoundError(
            f"emoji needs Debian's unicode-data ({EMOJI_TEST}) and fonts-noto-color-emoji "
            f"({EMOJI_FONT})"
        )
    subgroup_class = {sub: name for name, subs in EMOJI_CLASSES.items() for sub in subs}
    found: dict[str, list[str]] = {name: [] for name in EMOJI_CLASSES}
    subgroup = ""
    for line in EMOJI_TEST.read_text(encoding="utf-8").splitlines():
        if line.startswith("# subgroup:"):
            subgroup = line.split(":", 1)[1].strip()
        elif line and not line.startswith("#") and subgroup in subgroup_class:
            points, status = (part.strip() for part in line.split("#")[0].split(";"))
            codes = points.split()
            if status == "fully-qualified" and codes[1:] in ([], ["FE0F"]):
                found[subgroup_class[subgroup]].append("".join(chr(int(c, 16)) for c in codes))
    return found


def emoji(dest: Path, per_emoji: int = 4, size: int = 128, seed: int = 0) -> Path:
    """``dest/{train,val,test}/<class>/<codepoint>-<i>.png``, split by emoji (60/20/20)."""
    from PIL import Image, ImageDraw, ImageFont

    classes = emoji_by_class()

    def write(root: Path) -> None:
        rng = np.random.default_rng(seed)
        font = ImageFont.truetype(str(EMOJI_FONT), EMOJI_PX)
        for name, symbols in classes.items():
            for split, chosen in _three_way(symbols, rng, 0.2, 0.2).items():
                folder = root / split / name
                folder.mkdir(parents=True, exist_ok=True)
                for symbol in chosen:
                    drawn = Image.new("RGBA", (EMOJI_PX + 32, EMOJI_PX + 32), (0, 0, 0, 0))
                    ImageDraw.Draw(drawn).text((0, 0), symbol, font=font, embedded_color=True)
                    drawn = drawn.crop(drawn.getbbox())
                    for i in range(per_emoji):
                        side = int(size * rng.uniform(0.5, 0.9))
                        scale = side / max(drawn.size)
                        shown = drawn.resize(
                            (max(1, int(drawn.width * scale)), max(1, int(drawn.height * scale))),
                            Image.Resampling.LANCZOS,
                        )
                        paper = tuple(int(c) for c in rng.integers(170, 256, 3))
                        image = Image.new("RGB", (size, size), paper)
                        x = int(rng.integers(0, size - shown.width + 1))
                        y = int(rng.integers(0, size - shown.height + 1))
                        image.paste(shown, (x, y), shown)
                        image.save(folder / f"{ord(symbol[0]):x}-{i}.png")

    return _once(Path(dest), write)


WRITERS: dict[str, Callable[[Path], Path]] = {
    "digits": digits,
    "font-digits": font_digits,
    "emoji": emoji,
}
