"""Reading images out of a request: multipart `file` parts or one raw `image/*` body.

The body is read as a stream and refused as soon as it passes the byte limit, before the
multipart parser or the decoder sees it.
"""

from __future__ import annotations

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.types import Message

from service.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from service.inference import Upload
from service.settings import ServiceSettings

UPLOAD_OPENAPI = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "One or more images (JPEG, PNG, WebP, GIF, BMP, TIFF)",
                        }
                    },
                    "required": ["file"],
                }
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


async def read_uploads(request: Request, settings: ServiceSettings) -> list[Upload]:
    content_type = request.headers.get("content-type", "").lower()
    body = await _read_body(request, settings.max_upload_bytes)
    if content_type.startswith("multipart/form-data"):
        return await _multipart_files(request, body, settings.max_files_per_request)
    if content_type.startswith("image/") or content_type.startswith("application/octet-stream"):
        return [Upload(None, body)]
    sent = content_type or "no content type"
    raise UnsupportedMediaType(
        f"send multipart/form-data with 'file' parts or an image/* body, not {sent!r}"
    )


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"upload is {int(declared)} bytes; the limit is {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"upload is over the {limit} byte limit")
    return bytes(body)


async def _multipart_files(request: Request, body: bytes, max_files: int) -> list[Upload]:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    replayed = Request(request.scope, replay)
    try:
        form = await replayed.form(max_files=max_files, max_fields=100)
    except HTTPException as exc:
        detail = str(exc.detail)
        if "Too many files" in detail:
            raise PayloadTooLarge(f"too many files; at most {max_files} per request") from None
        raise BadRequest(f"malformed multipart body: {detail}") from None
    try:
        files = [v for k, v in form.multi_items() if k == "file" and isinstance(v, UploadFile)]
        if not files:
            other = [k for k, v in form.multi_items() if isinstance(v, UploadFile)]
            hint = f" (got file fields {sorted(set(other))})" if other else ""
            raise BadRequest(f"no 'file' part in the multipart body{hint}")
        return [Upload(f.filename, await f.read()) for f in files]
    finally:
        await form.close()
