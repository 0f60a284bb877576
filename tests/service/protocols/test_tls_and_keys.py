"""TLS for HTTP and gRPC (ROOST_TLS_*), API keys from files that rotate while the server runs
(ROOST_API_KEYS_FILE), and the keys as OpenAPI security schemes.

The certificates are made here with `cryptography`: a CA, a server certificate for 127.0.0.1 and
localhost that it signed, and a client certificate for mutual TLS. The servers are real
`python -m service` processes, reached by httpx over HTTPS and by tritonclient.grpc over TLS.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import ssl
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from modelkit import publish, solid_png
from pydantic import ValidationError
from servers import LoopbackProcess, free_port
from tritonclient.utils import InferenceServerException

from service.app import create_app
from service.protocols.auth import KeyFileError, KeyFiles, read_keys, tls_files
from service.settings import ServiceSettings

# --- certificates ----------------------------------------------------------------------------


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def client_context(self, with_certificate: bool = False) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ca)
        if with_certificate:
            context.load_cert_chain(self.client_cert, self.client_key)
        return context


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    extensions: list[tuple[x509.ExtensionType, bool]],
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA, a server certificate for 127.0.0.1 and localhost, and a client certificate."""
    folder = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate(
        "Roost test CA",
        ca_key,
        None,
        ca_key,
        [
            (x509.BasicConstraints(ca=True, path_length=None), True),
            (
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                True,
            ),
            (x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False),
        ],
    )
    leaf_extensions = [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False),
    ]
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _certificate(
        "127.0.0.1",
        server_key,
        ca.subject,
        ca_key,
        [
            *leaf_extensions,
            (
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                False,
            ),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
        ],
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _certificate(
        "roost-test-client",
        client_key,
        ca.subject,
        ca_key,
        [*leaf_extensions, (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)],
    )
    pki = Pki(
        folder / "ca.pem",
        folder / "server.pem",
        folder / "server-key.pem",
        folder / "client.pem",
        folder / "client-key.pem",
    )
    pki.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pki.server_cert.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    pki.client_cert.write_bytes(client.public_bytes(serialization.Encoding.PEM))
    _write_key(pki.server_key, server_key)
    _write_key(pki.client_key, client_key)
    return pki


# --- a server over HTTPS -----------------------------------------------------------------------


class TlsRoost(LoopbackProcess):
    """`python -m service` on 127.0.0.1 with `env`, reached over HTTPS (trusting `context`),
    returned once /healthz answers; its gRPC port is `grpc_port`."""

    def __init__(self, repo: Path, log_path: Path, context: ssl.SSLContext, **env: str) -> None:
        port, self.grpc_port = free_port(), free_port()
        command = [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)]
        settings = {
            "ROOST_POLL_INTERVAL_S": "0",
            "ROOST_GRPC_PORT": str(self.grpc_port),
            **env,
        }
        super().__init__(
            [*command, "--model-repo", str(repo)], port, log_path, {**os.environ, **settings}
        )
        self.client.close()
        self.url = f"https://127.0.0.1:{port}"
        self.client = httpx.Client(base_url=self.url, verify=context, timeout=30.0)
        self.wait_for(lambda: self.client.get("/readyz").status_code == 200, 60, "ready")

    def grpc(self, pki: Pki, with_certificate: bool = False) -> grpcclient.InferenceServerClient:
        """tritonclient.grpc over TLS, trusting the test CA."""
        if not with_certificate:
            return grpcclient.InferenceServerClient(
                f"127.0.0.1:{self.grpc_port}", ssl=True, root_certificates=str(pki.ca)
            )
        return grpcclient.InferenceServerClient(
            f"127.0.0.1:{self.grpc_port}",
            ssl=True,
            root_certificates=str(pki.ca),
            private_key=str(pki.client_key),
            certificate_chain=str(pki.client_cert),
        )


@pytest.fixture
def start_tls_server(tmp_path: Path) -> Iterator[object]:
    servers: list[TlsRoost] = []

    def start(repo: Path, context: ssl.SSLContext, **env: str) -> TlsRoost:
        server = TlsRoost(repo, tmp_path / f"server-{len(servers)}.log", context, **env)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def image_input(images: list[bytes]) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput("IMAGE", [len(images)], "BYTES")
    tensor.set_data_from_numpy(np.array(images, dtype=np.object_))
    return tensor


def write_atomically(path: Path, text: str) -> None:
    """As a secret mount or `mv` replaces a file: a new inode renamed over the old one."""
    draft = path.with_name(path.name + ".new")
    draft.write_text(text)
    os.replace(draft, path)


def wait_until(condition, timeout: float = 10.0) -> float:  # type: ignore[no-untyped-def]
    """Seconds until `condition()` held; fails after `timeout`."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            pytest.fail(f"not true after {timeout} s")
        time.sleep(0.05)
    return time.monotonic() - started


# --- a real server: HTTPS, gRPC over TLS, keys rotated -----------------------------------------


@pytest.mark.slow
def test_https_and_grpc_tls_with_a_key_file_rotated_while_serving(
    repo: Path, tmp_path: Path, pki: Pki, start_tls_server
) -> None:
    publish(repo, "colours", 1)
    keys = tmp_path / "api-keys"
    keys.write_text("# classification keys\nold-key\n\n")
    server = start_tls_server(
        repo,
        pki.client_context(),
        ROOST_TLS_CERTFILE=str(pki.server_cert),
        ROOST_TLS_KEYFILE=str(pki.server_key),
        ROOST_API_KEYS_FILE=str(keys),
        ROOST_KEY_FILES_CHECK_S="0.2",
    )
    http = server.client
    png = solid_png((240, 10, 10))

    def classify(key: str | None) -> int:
        headers = {"X-API-Key": key} if key else {}
        files = {"file": ("red.png", png, "image/png")}
        return http.post("/v1/classify", files=files, headers=headers).status_code

    def grpc_metadata(key: str) -> str:
        client = server.grpc(pki)
        try:
            client.get_model_metadata("colours", headers={"x-api-key": key}, client_timeout=10)
            return "OK"
        except InferenceServerException as exc:
            return str(exc.status())
        finally:
            client.close()

    assert f"running on https://127.0.0.1:{server.port}" in server.log()
    assert f"over gRPC on 127.0.0.1:{server.grpc_port} (TLS)" in server.log()
    # HTTPS only: plain HTTP on the same port gets no answer.
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{server.port}/healthz", timeout=5)
    assert classify("old-key") == 200 and classify(None) == 401 and classify("new-key") == 401
    bearer = {"Authorization": "Bearer old-key"}
    assert http.get("/v1/models", headers=bearer).status_code == 200

    # gRPC over TLS, with the CA: a real inference with the key, none without.
    client = server.grpc(pki)
    try:
        assert client.is_server_live(client_timeout=10)
        result = client.infer(
            "colours", [image_input([png])], headers={"x-api-key": "old-key"}, client_timeout=10
        )
        assert result.as_numpy("PROBABILITIES").shape == (1, 3)
        with pytest.raises(InferenceServerException) as refused:
            client.infer("colours", [image_input([png])], client_timeout=10)
        assert str(refused.value.status()) == "StatusCode.UNAUTHENTICATED"
    finally:
        client.close()
    plain = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    try:  # a plaintext client cannot talk to the TLS port
        with pytest.raises(InferenceServerException):
            plain.is_server_live(client_timeout=5)
    finally:
        plain.close()

    # Rotation: a new file renamed over the old one, no restart.
    write_atomically(keys, "new-key\n")
    took = wait_until(lambda: classify("old-key") == 401)
    assert took < 5, took
    assert classify("new-key") == 200
    assert grpc_metadata("new-key") == "OK"
    assert grpc_metadata("old-key") == "StatusCode.UNAUTHENTICATED"

    # The file goes away: the last keys stay, and the log says so once.
    keys.unlink()
    time.sleep(1.0)  # five checks
    assert classify("new-key") == 200 and classify("old-key") == 401
    assert server.log().count("cannot be read") == 1, server.log()[-2000:]

    # It comes back, written in place this time.
    keys.write_text("third-key\n")
    wait_until(lambda: classify("third-key") == 200)
    assert classify("new-key") == 401
    assert "API keys file" in server.log() and "third-key" not in server.log()


@pytest.mark.slow
def test_client_certificates_are_required_with_ca_certs(
    repo: Path, pki: Pki, start_tls_server
) -> None:
    publish(repo, "colours", 1)
    server = start_tls_server(
        repo,
        pki.client_context(with_certificate=True),
        ROOST_TLS_CERTFILE=str(pki.server_cert),
        ROOST_TLS_KEYFILE=str(pki.server_key),
        ROOST_TLS_CA_CERTS=str(pki.ca),
    )
    assert server.client.get("/v1/models").status_code == 200
    with pytest.raises(httpx.TransportError):  # the handshake fails without a certificate
        httpx.get(f"{server.url}/v1/models", verify=pki.client_context(), timeout=5)

    client = server.grpc(pki, with_certificate=True)
    try:
        assert client.get_model_metadata("colours", client_timeout=10).name == "colours"
    finally:
        client.close()
    anonymous = server.grpc(pki)
    try:
        with pytest.raises(InferenceServerException) as refused:
            anonymous.get_model_metadata("colours", client_timeout=5)
        assert str(refused.value.status()) == "StatusCode.UNAVAILABLE"
    finally:
        anonymous.close()
    assert "(TLS, client certificates required)" in server.log()


# --- key files and TLS settings, in-process ----------------------------------------------------


def test_a_key_file_has_one_key_a_line() -> None:
    text = "# rotated 2026-12-01\n  k1  \n\nk2\r\n#k3\nkey with spaces\n"
    assert read_keys(text) == ["k1", "k2", "key with spaces"]


def test_key_files_add_to_the_variables_and_keep_the_last_keys(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    keys, admin = tmp_path / "keys", tmp_path / "admin"
    keys.write_text("f1\nf2\n")
    admin.write_text("a1\n")
    settings = ServiceSettings(
        api_keys=["env"], api_keys_file=keys, admin_api_keys_file=admin, model_repo=tmp_path
    )
    files = KeyFiles(settings)
    accepted = files.accepted
    assert accepted.classify == ["env", "f1", "f2"] and accepted.admin == ["a1"]
    assert settings.api_keys == ["env"], "the settings stay as given"

    write_atomically(keys, "f3\n")
    files.check()
    assert accepted.classify == ["env", "f3"] and accepted.admin == ["a1"]

    caplog.set_level(logging.INFO, logger="service.protocols.auth")
    for broken in ("missing", "empty", "unreadable"):
        caplog.clear()
        if broken == "missing":
            keys.unlink()
        elif broken == "empty":
            keys.write_text("# nothing yet\n")
        else:
            keys.write_bytes(b"\xff\xfe not utf-8")
        files.check()
        files.check()
        assert accepted.classify == ["env", "f3"], broken
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1, (broken, caplog.text)
        assert "the last keys stay" in warnings[0].getMessage()

    caplog.clear()
    write_atomically(keys, "f4\n")
    files.check()
    assert accepted.classify == ["env", "f4"]
    assert "API keys file" in caplog.text and "1 keys" in caplog.text and "f4" not in caplog.text


def test_a_key_file_must_exist_and_hold_a_key_at_start(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="api_keys_file"):
        ServiceSettings(api_keys_file=tmp_path / "missing", model_repo=tmp_path)
    empty = tmp_path / "empty"
    empty.write_text("\n# none\n")
    with pytest.raises(KeyFileError, match="holds no key"):
        create_app(ServiceSettings(admin_api_keys_file=empty, model_repo=tmp_path))


def test_tls_files_come_together(tmp_path: Path) -> None:
    pem = tmp_path / "any.pem"
    pem.write_text("not checked here")

    def settings(**files: Path) -> ServiceSettings:
        return ServiceSettings(model_repo=tmp_path, **files)

    assert tls_files(settings()) is None
    both = tls_files(settings(tls_certfile=pem, tls_keyfile=pem))
    assert both is not None and both.ca_certs is None
    for lone in ({"tls_certfile": pem}, {"tls_keyfile": pem}, {"tls_ca_certs": pem}):
        with pytest.raises(ValueError, match="ROOST_TLS_"):
            tls_files(settings(**lone))


async def test_the_schema_declares_both_ways_of_presenting_a_key(repo: Path, start_app) -> None:  # type: ignore[no-untyped-def]
    roost = await start_app(repo, api_keys=["k1"])
    schema = (await roost.client.get("/openapi.json")).json()
    schemes = schema["components"]["securitySchemes"]
    assert schemes["APIKeyHeader"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": schemes["APIKeyHeader"]["description"],
    }
    assert schemes["BearerKey"]["type"] == "http" and schemes["BearerKey"]["scheme"] == "bearer"
    either = [{"APIKeyHeader": []}, {"BearerKey": []}]
    keyed = [
        ("post", "/v1/classify"),
        ("post", "/v1/models/{name}/classify"),
        ("post", "/v1/models/{name}/explain"),
        ("get", "/v1/models"),
        ("post", "/v1/repository/reload"),
        ("post", "/v2/models/{name}/infer"),
    ]
    for method, path in keyed:
        assert schema["paths"][path][method]["security"] == either, path
    for probe in ("/healthz", "/readyz", "/metrics", "/v2/health/ready"):
        assert "security" not in schema["paths"][probe]["get"], probe
