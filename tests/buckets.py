"""A real S3 API on loopback for the bucket tests: moto's server, started by the tests, and the
standard AWS environment (AWS_ENDPOINT_URL, test credentials) that points boto3 at it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
import httpx
from moto.server import ThreadedMotoServer

from bench.harness import free_port

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "roost-test",
    "AWS_SECRET_ACCESS_KEY": "roost-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class S3Store:
    """moto's S3 server on 127.0.0.1; `stop()` and `start()` take it down and bring it back on
    the same port with the same buckets (moto keeps them in this process)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._server: ThreadedMotoServer | None = None

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> None:
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def reset(self) -> None:
        """Forget every bucket and object (moto's own reset call)."""
        httpx.post(f"{self.endpoint}/moto-api/reset", timeout=10).raise_for_status()

    def environment(self) -> dict[str, str]:
        """What a process (a server, `roost export`) needs to reach this store."""
        return {"AWS_ENDPOINT_URL": self.endpoint, **CREDENTIALS}

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
        )

    def bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def upload_tree(
        self, folder: Path, bucket: str, prefix: str = "", *, card: bool = True
    ) -> list[str]:
        """Every file under `folder` as `prefix + relative path`; card.json files last, as a
        publisher uploads them (the completion marker), or not at all (`card` false: a
        half-uploaded version)."""
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        if not card:
            files = [p for p in files if p.name != "card.json"]
        files.sort(key=lambda p: p.name == "card.json")
        client = self.client()
        keys = []
        for path in files:
            key = prefix + path.relative_to(folder).as_posix()
            client.upload_file(str(path), bucket, key)
            keys.append(key)
        return keys
