"""The requests the load generator sends, per protocol: each input JPEG as one request.

- `v1`: the JPEG as a raw `image/jpeg` body to `/v1/classify` (Roost's own API, and the route
  the naive server answers); the answer is the model's default top-k as JSON.
- `v1-multipart`: the same route with the JPEG as a multipart `file` part, as curl -F and
  browsers send it.
- `v2`: the Open Inference Protocol's binary route, `/v2/models/{model}/infer`, as tritonclient
  sends it: a JSON request, then the JPEG as a binary BYTES tensor (a 4-byte little-endian
  length, then the bytes; `Inference-Header-Content-Length` gives the JSON's length); the
  answer is the classification extension's top-k, as binary data after the response JSON.
"""

from __future__ import annotations

import json
import struct

from bench.loadgen import Request

PROTOCOLS = ("v1", "v1-multipart", "v2")
_BOUNDARY = "roost-bench-boundary"


def v1_requests(bodies: list[bytes]) -> list[Request]:
    return [Request("/v1/classify", body) for body in bodies]


def v1_multipart_requests(bodies: list[bytes]) -> list[Request]:
    content_type = f"multipart/form-data; boundary={_BOUNDARY}"
    head = (
        f'--{_BOUNDARY}\r\nContent-Disposition: form-data; name="file"; '
        'filename="photo.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
    ).encode()
    tail = f"\r\n--{_BOUNDARY}--\r\n".encode()
    return [Request("/v1/classify", head + body + tail, content_type) for body in bodies]


def v2_requests(
    bodies: list[bytes],
    model: str,
    top_k: int = 5,
    per_request: int = 1,
    binary_output: bool = True,
) -> list[Request]:
    """Binary-route requests of `per_request` JPEGs each (`BYTES [k]`), one starting at each
    body, asking for the classification top-`top_k`."""
    prepared = []
    for start in range(len(bodies)):
        group = [bodies[(start + j) % len(bodies)] for j in range(per_request)]
        tensor = b"".join(struct.pack("<I", len(b)) + b for b in group)
        output_parameters: dict[str, object] = {"classification": top_k}
        if binary_output:
            output_parameters["binary_data"] = True
        header = json.dumps(
            {
                "inputs": [
                    {
                        "name": "IMAGE",
                        "datatype": "BYTES",
                        "shape": [per_request],
                        "parameters": {"binary_data_size": len(tensor)},
                    }
                ],
                "outputs": [{"name": "PROBABILITIES", "parameters": output_parameters}],
            }
        ).encode()
        prepared.append(
            Request(
                f"/v2/models/{model}/infer",
                header + tensor,
                "application/octet-stream",
                (("Inference-Header-Content-Length", str(len(header))),),
            )
        )
    return prepared


def requests_for(protocol: str, bodies: list[bytes], model: str) -> list[Request]:
    if protocol == "v2":
        return v2_requests(bodies, model)
    if protocol == "v1-multipart":
        return v1_multipart_requests(bodies)
    return v1_requests(bodies)
