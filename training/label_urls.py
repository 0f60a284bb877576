"""``roost export --label-urls FILE|wikipedia``: a URL per label, written into labels.txt.

``wikipedia`` builds each URL from the label's name (no network: the page is not checked);
``FILE`` holds ``name<TAB>url`` lines, as labels.txt does. Labels the file does not name get
no URL; a name the file has but the model lacks is an error (a typo would otherwise go
unnoticed).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from roost.contract.labels import Label

WIKIPEDIA = "https://en.wikipedia.org/wiki/"


class LabelUrlError(ValueError):
    """The URL file does not fit the model's labels."""


def wikipedia_url(name: str) -> str:
    """The English Wikipedia article named like the label: words joined by ``_`` (folder names
    often use ``_`` for spaces), the first letter upper-case, as Wikipedia titles are."""
    title = "_".join(name.replace("_", " ").split())
    title = title[:1].upper() + title[1:]
    return WIKIPEDIA + quote(title, safe="_-()',.")


def read_url_file(path: Path) -> dict[str, str]:
    urls: dict[str, str] = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        name, tab, url = line.partition("\t")
        if not tab or not url.strip().startswith(("http://", "https://")):
            raise LabelUrlError(f"{path} line {number}: expected name<TAB>http(s)://...")
        urls[name.strip()] = url.strip()
    return urls


def with_urls(labels: list[str], source: str) -> list[Label]:
    """``labels`` with URLs from ``source``: ``wikipedia`` or a file of ``name<TAB>url``."""
    if source == "wikipedia":
        return [Label(name, wikipedia_url(name)) for name in labels]
    urls = read_url_file(Path(source))
    unknown = sorted(set(urls) - set(labels))
    if unknown:
        raise LabelUrlError(f"{source} names labels the model does not have: {unknown[:5]}")
    return [Label(name, urls.get(name)) for name in labels]
