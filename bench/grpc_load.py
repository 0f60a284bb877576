"""Closed-loop load over the Open Inference Protocol's gRPC service, as tritonclient sends it.

Each client has its own channel (as separate client processes would) and sends ModelInfer
requests prepared once: the JPEG as a raw BYTES tensor (a 4-byte little-endian length, then
the bytes), the classification extension's top-5 asked for. Needs the grpc extra.
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable

from bench.loadgen import LoadResult, closed_loop_calls


def infer_requests(bodies: list[bytes], model: str, top_k: int = 5) -> list[object]:
    from tritonclient.grpc import service_pb2 as pb

    prepared = []
    for body in bodies:
        request = pb.ModelInferRequest(model_name=model)
        request.inputs.add(name="IMAGE", datatype="BYTES", shape=[1])
        request.raw_input_contents.append(struct.pack("<I", len(body)) + body)
        output = request.outputs.add(name="PROBABILITIES")
        output.parameters["classification"].int64_param = top_k
        prepared.append(request)
    return prepared


async def grpc_closed_loop(
    target: str, prepared: list[object], concurrency: int, requests: int, time_limit_s: float
) -> LoadResult:
    """`concurrency` clients on `target` (host:port on 127.0.0.1), bounded in requests and time."""
    import grpc
    from tritonclient.grpc import service_pb2_grpc

    channels = [grpc.aio.insecure_channel(target) for _ in range(concurrency)]

    def client(channel: grpc.aio.Channel) -> Callable[[int], Awaitable[bool]]:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)

        async def send(n: int) -> bool:
            try:
                await stub.ModelInfer(prepared[n % len(prepared)], timeout=60)
            except grpc.aio.AioRpcError:
                return False
            return True

        return send

    try:
        return await closed_loop_calls([client(c) for c in channels], requests, time_limit_s)
    finally:
        for channel in channels:
            await channel.close()
