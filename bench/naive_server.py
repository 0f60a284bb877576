"""The baseline a notebook's demo becomes: decode and `session.run` once per request.

Run: `MODEL_DIR=model_repo/imagenet/1 uvicorn bench.naive_server:app --port 8100`.
Each request is decoded and run in a worker thread on its own, as a threaded Flask app would;
no batching, no admission control.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI, Request
from PIL import Image
from starlette.concurrency import run_in_threadpool

MODEL_DIR = Path(os.environ.get("MODEL_DIR", "model_repo/imagenet/1"))
_card = json.loads((MODEL_DIR / "card.json").read_text())
_height, _width = _card["image_size"]
_labels = (MODEL_DIR / "labels.txt").read_text().splitlines()
_session = ort.InferenceSession(
    str(MODEL_DIR / "model.onnx"), providers=ort.get_available_providers()
)
_input = _session.get_inputs()[0].name

app = FastAPI()


@app.post("/v1/classify")
async def classify(request: Request) -> dict[str, object]:
    return await run_in_threadpool(_predict, await request.body())


def _predict(body: bytes) -> dict[str, object]:
    image = Image.open(io.BytesIO(body)).convert("RGB").resize((_width, _height))
    batch = np.asarray(image, dtype=np.uint8)[np.newaxis]
    (scores,) = _session.run(None, {_input: batch})
    best = np.argsort(-scores[0])[:5]
    return {"predictions": [{"label": _labels[i], "score": float(scores[0][i])} for i in best]}
