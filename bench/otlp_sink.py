"""`python -m bench.otlp_sink --port 4318`: an OTLP/HTTP endpoint that accepts and discards.

It stands in for a collector on another machine when a benchmark measures what tracing costs
the *server*: a real receiver on this 2-core machine would take CPU from the server under test
and the figure would be the receiver's too. It answers every `POST /v1/traces` with 200 and an
empty `ExportTraceServiceResponse` (zero bytes), and prints the requests and bytes received
when stopped. Compatibility with real receivers is the test suite's job
(tests/service/observability/test_tracing_otlp.py), not this program's.
"""

from __future__ import annotations

import argparse
import http.server
import threading


class _Counts:
    def __init__(self) -> None:
        self.requests = 0
        self.bytes = 0
        self.lock = threading.Lock()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.otlp_sink", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=4318)
    args = p.parse_args(argv)
    counts = _Counts()

    class Sink(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's exporter expects

        def do_POST(self) -> None:  # noqa: N802 (the handler's required name)
            length = int(self.headers.get("content-length", "0"))
            self.rfile.read(length)
            with counts.lock:
                counts.requests += 1
                counts.bytes += length
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass  # one line per export would be the only output

    server = http.server.ThreadingHTTPServer((args.host, args.port), Sink)
    print(f"discarding OTLP/HTTP on http://{args.host}:{args.port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        print(f"received {counts.requests} exports, {counts.bytes} bytes", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
