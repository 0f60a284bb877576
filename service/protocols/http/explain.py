"""POST /v1/models/{name}/explain: an occlusion-sensitivity map for the top-1 class of one image.

Admitted like classify (routed, leased and admitted before the body is read, counted in the
metrics); the image is decoded once with the model's decoder, then the original and its
`grid`² masked copies (`service/serving/explain.py`) run through the same version's batcher, at most
one batch's worth queued at a time so one explanation does not crowd out other requests.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from service.errors import InvalidParameter
from service.protocols.auth import require_classify_key
from service.protocols.http.intake import admitted_request
from service.protocols.http.schemas import ERROR_RESPONSES
from service.protocols.http.uploads import check_media_type, read_uploads, upload_openapi
from service.repository.registry import ServedVersion
from service.runtime.scores import Scores
from service.serving.admission import VERSION_PATTERN, version_selector
from service.serving.explain import (
    DEFAULT_GRID,
    MAX_GRID,
    MIN_GRID,
    heatmap_png,
    masked_copies,
    occlusion_map,
)
from service.serving.inference import decode_upload, score_decoded
from service.serving.state import ServiceState, get_state

router = APIRouter(tags=["explain"], dependencies=[Depends(require_classify_key)])


class ExplainResponse(BaseModel):
    model: str
    version: int
    filename: str | None
    label: str = Field(description="The top-1 class of the image")
    index: int
    score: float = Field(description="Its probability on the image as sent")
    grid_size: int = Field(description="Cells per side")
    grid: list[list[float]] = Field(
        description="Drop of the top-1 probability when each cell is hidden with gray: "
        "rows top to bottom, cells left to right; larger means the answer depends more on it"
    )

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "model": "imagenet",
                    "version": 2,
                    "filename": "cat.jpg",
                    "label": "tiger cat",
                    "index": 282,
                    "score": 0.367,
                    "grid_size": 2,
                    "grid": [[0.21, 0.02], [0.05, -0.01]],
                }
            ]
        }
    }


_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The map as JSON, or (`format=png`) as a heatmap at the model's input size",
        "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
    },
    **ERROR_RESPONSES,
}
_DESCRIPTION = f"""\
Which parts of the image the model's top-1 answer depends on (occlusion sensitivity).

The image is decoded and resized as for classify, cut into `grid` x `grid` cells, and each
cell in turn is hidden with neutral gray; every masked copy runs through the same model version
in batches. Each cell's value is how much the top-1 class's probability drops when it is
hidden. One image per request; the work is `grid`² + 1 images
({MIN_GRID} <= grid <= {MAX_GRID}: at most {MAX_GRID**2 + 1}), admitted like classify.

`format=json` (default): the grid of drops. `format=png`: an RGBA heatmap at the model's input
size, red with opacity proportional to the drop (the largest drop opaque), to lay over the
image (for `center_crop` models, over its centre crop).
"""


@router.post(
    "/v1/models/{name}/explain",
    summary="Explain the top-1 answer for one image (occlusion map)",
    description=_DESCRIPTION,
    response_model=ExplainResponse,
    responses=_RESPONSES,
    openapi_extra=upload_openapi(many=False),
)
async def explain(
    request: Request,
    name: str = Path(max_length=64),
    version: str | None = Query(
        None,
        pattern=VERSION_PATTERN,
        description="Version number or label (e.g. canary), as for classify; default: the "
        "model's traffic split, else the highest ready version",
    ),
    grid: int = Query(DEFAULT_GRID, ge=MIN_GRID, le=MAX_GRID, description="Cells per side"),
    output: Literal["json", "png"] = Query(
        "json", alias="format", description="`json`: the grid of drops; `png`: a heatmap"
    ),
    state: ServiceState = Depends(get_state),
) -> ExplainResponse | Response:
    async with admitted_request(
        request,
        state,
        name,
        version_selector(version),
        timed=False,  # hundreds of images: not a serving latency, nor a canary's
        before_admission=check_media_type,
    ) as admitted:
        served, deadline = admitted.served, admitted.deadline
        height, width = served.artifacts.card.image_size
        if grid > min(height, width):
            raise InvalidParameter(
                f"grid must be at most {min(height, width)} for this model's {height}x{width} input"
            )
        uploads = await read_uploads(request, state.settings, admitted.count_body_bytes)
        if len(uploads) != 1:
            raise InvalidParameter(
                f"explain takes exactly one image; this request has {len(uploads)}"
            )
        upload = uploads[0]
        image = await decode_upload(state, served, upload, deadline)
        scores = await _score_with_masks(state, served, image, grid, deadline)
        result = occlusion_map(scores[0], scores[1:], grid)
        if output == "png":
            png = await asyncio.get_running_loop().run_in_executor(
                state.decode_pool, heatmap_png, result.drops, (height, width)
            )
            return Response(png, media_type="image/png")
        return ExplainResponse(
            model=served.name,
            version=served.version,
            filename=upload.filename,
            label=served.artifacts.labels[result.index].name,
            index=result.index,
            score=result.score,
            grid_size=grid,
            grid=result.drops.tolist(),
        )


async def _score_with_masks(
    state: ServiceState, served: ServedVersion, image: np.ndarray, grid: int, deadline: float
) -> np.ndarray:
    """Probabilities `[1 + grid², C]`: the original, then each masked copy (row-major).

    One chunk of at most a batch (and never more than the queue holds) is queued at a time:
    each chunk is admitted on its own, and other requests' images queue between chunks.
    """
    cells = grid * grid
    chunk = max(1, min(served.config.max_batch_size, served.config.max_queue_size))
    loop = asyncio.get_running_loop()
    answers: list[Scores] = []
    start = -1  # -1: the original image leads the first chunk
    while start < cells:
        stop = min(cells, start + chunk)
        masked = await loop.run_in_executor(
            state.decode_pool, masked_copies, image, grid, range(max(0, start), stop)
        )
        images = ([image] if start < 0 else []) + list(masked)
        answers += await score_decoded(state, served, images, deadline)
        start = stop
    return np.stack([answer.probabilities for answer in answers])
