"""The Open Inference Protocol: one core (tensors, metadata, repository index, states) and
its two transports, REST (`rest.py`) and gRPC (`grpc_server.py`)."""
