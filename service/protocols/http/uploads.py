"""Reading images out of a request: multipart `file` parts or one raw `image/*` body.

The body is read once, as a stream, straight into python-multipart's parser (or joined, for a
raw body), and refused as soon as it passes the byte limit. Nothing is replayed or spooled
to disk: each image is held once while it arrives and handed to the decoder as bytes, and a
read that fails lets go of what it held at once. A `file` part counts whether or not it has
a filename. Callers check admission before calling this, so a refused request reads no body
at all; how long the body may take and how many body bytes the server holds at once are
bounded around the app (service/protocols/http/lingering.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Callable
from typing import TYPE_CHECKING, Any

from fastapi import Request
from python_multipart.exceptions import FormParserError, MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from service.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from service.serving.inference import Upload
from service.settings import ServiceSettings

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks


def upload_openapi(*, many: bool) -> dict[str, Any]:
    """The request body of a route that reads images: multipart `file` parts (one, or `many`)
    or one raw `image/*` body."""
    image = {"type": "string", "format": "binary"}
    formats = "JPEG, PNG, WebP, GIF, BMP, TIFF"
    part = (
        {"type": "array", "items": image, "description": f"One or more images ({formats})"}
        if many
        else {**image, "description": f"One image ({formats})"}
    )
    form = {"type": "object", "properties": {"file": part}, "required": ["file"]}
    return {
        "requestBody": {
            "required": True,
            "content": {"multipart/form-data": {"schema": form}, "image/*": {"schema": image}},
        }
    }


UPLOAD_OPENAPI = upload_openapi(many=True)


_MAX_FORM_FIELDS = 100


def check_media_type(request: Request) -> None:
    """Refuse a body no reader below understands, before anything is read."""
    content_type = request.headers.get("content-type", "").lower()
    if not content_type.startswith(("multipart/form-data", "image/", "application/octet-stream")):
        sent = content_type or "no content type"
        raise UnsupportedMediaType(
            f"send multipart/form-data with 'file' parts or an image/* body, not {sent!r}"
        )


async def read_uploads(
    request: Request, settings: ServiceSettings, count_bytes: Callable[[int], None]
) -> list[Upload]:
    """The images of the request. `count_bytes` is told of every body byte read."""
    check_media_type(request)
    stream = limited_stream(request, settings.max_upload_bytes, count_bytes)
    content_type = request.headers.get("content-type", "")
    if content_type.lower().startswith("multipart/form-data"):
        return await _multipart_files(content_type, stream, settings.max_files_per_request)
    return [Upload(None, await read_all(stream))]


async def limited_stream(
    request: Request, limit: int, count_bytes: Callable[[int], None]
) -> AsyncGenerator[bytes, None]:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"upload is {int(declared)} bytes; the limit is {limit}")
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        count_bytes(len(chunk))
        if received > limit:
            raise PayloadTooLarge(f"upload is over the {limit} byte limit")
        yield chunk


async def read_all(stream: AsyncGenerator[bytes, None]) -> bytes:
    """`stream` joined, in one growing buffer: large, it is mapped memory of its own, which
    goes back to the system when freed (many chunks would leave holes in the heap instead).
    Whatever ends the read early (413, 408, a client gone) empties it at once, not when its
    traceback goes: the answer may wait seconds for the lingering read
    (service/protocols/http/lingering.py) while the error is still alive."""
    body = bytearray()
    try:
        async with contextlib.aclosing(stream):
            async for chunk in stream:
                body += chunk
        return bytes(body)
    finally:
        body.clear()


async def _multipart_files(
    content_type: str, stream: AsyncGenerator[bytes, None], max_files: int
) -> list[Upload]:
    boundary = parse_options_header(content_type)[1].get(b"boundary")
    if not boundary:
        raise BadRequest("malformed multipart body: no boundary in its content type")
    form = _ImageForm(max_files)
    try:
        parser = MultipartParser(boundary, form.callbacks())
        async with contextlib.aclosing(stream):
            async for chunk in stream:
                parser.write(chunk)
        if not form.ended:
            raise BadRequest("malformed multipart body: it ends before its closing boundary")
        if not form.files:
            others = sorted(form.other_names)
            hint = f" (got fields {others})" if others else ""
            raise BadRequest(f"no 'file' part in the multipart body{hint}")
        uploads = []
        for filename, data in form.files:
            uploads.append(Upload(filename, bytes(data)))
            data.clear()
        return uploads
    except (FormParserError, MultipartParseError) as exc:
        raise BadRequest(f"malformed multipart body: {exc}") from None
    finally:
        form.drop()


class _ImageForm:
    """The `file` parts of a multipart/form-data body as python-multipart parses it: each held
    in one growing buffer, with its filename (None for a part sent without one, as
    `curl -F 'file=<cat.jpg'` sends it). Other parts are counted, named, and dropped."""

    def __init__(self, max_files: int) -> None:
        self.max_files = max_files
        self.files: list[tuple[str | None, bytearray]] = []
        self.other_names: set[str] = set()
        self.ended = False
        """Whether the closing boundary arrived."""
        self._others = 0
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._disposition = b""
        self._data: bytearray | None = None
        """The current part's bytes when it is a `file` part."""

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value_data,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_end": self._end,
        }

    def drop(self) -> None:
        """Let go of every part's bytes (the uploads, once built, hold their own)."""
        for _, data in self.files:
            data.clear()
        self._data = None

    def _part_begin(self) -> None:
        self._disposition = b""
        self._data = None

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _header_value_data(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        if self._header_name.strip().lower() == b"content-disposition":
            self._disposition = bytes(self._header_value)
        self._header_name.clear()
        self._header_value.clear()

    def _headers_finished(self) -> None:
        options = parse_options_header(self._disposition)[1]
        if b"name" not in options:
            raise BadRequest("malformed multipart body: a part's Content-Disposition has no name")
        name = _text(options[b"name"])
        if name != "file":
            self._others += 1
            if self._others > _MAX_FORM_FIELDS:
                raise BadRequest(f"too many form fields; at most {_MAX_FORM_FIELDS}")
            self.other_names.add(name[:100])
            return
        if len(self.files) == self.max_files:
            raise PayloadTooLarge(f"too many files; at most {self.max_files} per request")
        filename = options.get(b"filename")
        self._data = bytearray()
        self.files.append((None if filename is None else _text(filename), self._data))

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._data is not None:
            self._data += memoryview(data)[start:end]

    def _end(self) -> None:
        self.ended = True


def _text(raw: bytes) -> str:
    """A Content-Disposition parameter: UTF-8 as browsers send it, else Latin-1 (never fails)."""
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw.decode("latin-1")
