"""Reading images out of a request: multipart `file` parts or one raw `image/*` body.

The body is read once, as a stream, straight into the multipart parser (or into one buffer for
a raw body), and refused as soon as it passes the byte limit. Nothing is replayed or spooled
to disk: each image is held once while it arrives and handed to the decoder as bytes.
Callers check admission before calling this, so a refused request reads no body at all.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from typing import Any

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from service.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from service.inference import Upload
from service.settings import ServiceSettings


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
    if request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        return await _multipart_files(request, stream, settings)
    body = bytearray()
    async for chunk in stream:
        body += chunk
    return [Upload(None, bytes(body))]


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


async def _multipart_files(
    request: Request, stream: AsyncGenerator[bytes, None], settings: ServiceSettings
) -> list[Upload]:
    max_files = settings.max_files_per_request
    parser = MultiPartParser(
        request.headers,
        stream,
        max_files=max_files,
        max_fields=_MAX_FORM_FIELDS,
    )
    # The body is already capped at max_upload_bytes: keep file parts in memory up to that,
    # instead of Starlette's 1 MB spool that moves larger uploads to a temporary file.
    parser.spool_max_size = settings.max_upload_bytes
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        if "Too many files" in exc.message:
            raise PayloadTooLarge(f"too many files; at most {max_files} per request") from None
        raise BadRequest(f"malformed multipart body: {exc.message}") from None
    try:
        files = [v for k, v in form.multi_items() if k == "file" and isinstance(v, UploadFile)]
        if not files:
            other = [k for k, v in form.multi_items() if isinstance(v, UploadFile)]
            hint = f" (got file fields {sorted(set(other))})" if other else ""
            raise BadRequest(f"no 'file' part in the multipart body{hint}")
        return [Upload(f.filename, await f.read()) for f in files]
    finally:
        await form.close()
