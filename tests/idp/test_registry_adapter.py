"""The population registry's HTTP adapter: https with the gateway's certificate checked against a configured CA,
mutual TLS or a bearer token to prove itself, a timeout, and plain http refused except to this machine."""

from __future__ import annotations

import datetime as dt
import http.server
import ipaddress
import json
import ssl
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from core.identifiers import generate_resident_id
from core.settings import ConfigError
from idp.people import realname
from idp.settings import IdPSettings

RID = realname.parse_resident_id(generate_resident_id("110101", dt.date(1990, 5, 17), 123))


def _certificate(subject: str, key, issuer_key=None, issuer_name=None, *, ca=False, ip=None):
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ip:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


def _write(path, *items) -> str:
    blobs = []
    for item in items:
        if isinstance(item, x509.Certificate):
            blobs.append(item.public_bytes(serialization.Encoding.PEM))
        else:
            blobs.append(item.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    path.write_bytes(b"".join(blobs))
    return str(path)


class Gateway(http.server.BaseHTTPRequestHandler):
    seen: list[dict] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        peer = self.connection.getpeercert() if hasattr(self.connection, "getpeercert") else None
        type(self).seen.append({"authorization": self.headers.get("Authorization"), "peer": peer, "body": body})
        answer = json.dumps({"match": True, "status": "normal"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    folder = tmp_path_factory.mktemp("registry-pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("Registry test CA", ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _certificate("registry gateway", server_key, ca_key, ca.subject, ip="127.0.0.1")
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _certificate("hallmark registry adapter", client_key, ca_key, ca.subject)
    return {
        "ca": _write(folder / "ca.pem", ca),
        "server": _write(folder / "server.pem", server, server_key),
        "client_cert": _write(folder / "client.pem", client),
        "client_key": _write(folder / "client.key", client_key),
    }


def _serve(context: ssl.SSLContext | None):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Gateway)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def mutual_tls_gateway(pki):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki["server"])
    context.load_verify_locations(pki["ca"])
    context.verify_mode = ssl.CERT_REQUIRED  # no client certificate, no handshake
    server = _serve(context)
    yield f"https://127.0.0.1:{server.server_port}/verify"
    server.shutdown()
    server.server_close()


def test_mutual_tls_to_a_gateway_whose_certificate_chains_to_the_configured_ca(pki, mutual_tls_gateway):
    Gateway.seen = []
    registry = realname.HttpRegistry(
        mutual_tls_gateway, timeout=5, client_cert=pki["client_cert"], client_key=pki["client_key"], ca_file=pki["ca"]
    )
    assert registry.check("林晓红", RID).confirmed
    (seen,) = Gateway.seen
    assert dict(pair[0] for pair in seen["peer"]["subject"])["commonName"] == "hallmark registry adapter"
    assert seen["body"] == {"name": "林晓红", "resident_id": RID.value}


def test_without_the_client_certificate_or_with_another_ca_nothing_is_asked(pki, mutual_tls_gateway, tmp_path):
    Gateway.seen = []
    no_client = realname.HttpRegistry(mutual_tls_gateway, timeout=5, ca_file=pki["ca"])
    with pytest.raises(realname.RegistryUnavailable):
        no_client.check("林晓红", RID)
    other_key = ec.generate_private_key(ec.SECP256R1())
    other_ca = _write(tmp_path / "other-ca.pem", _certificate("Some other CA", other_key, ca=True))
    impostor_check = realname.HttpRegistry(
        mutual_tls_gateway, timeout=5, client_cert=pki["client_cert"], client_key=pki["client_key"], ca_file=other_ca
    )
    with pytest.raises(realname.RegistryUnavailable):  # the gateway's certificate does not chain to the CA we trust
        impostor_check.check("林晓红", RID)
    assert Gateway.seen == []  # neither call reached the gateway with a resident's ID


def test_a_bearer_token_is_sent_and_never_shown(pki):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki["server"])
    server = _serve(context)
    try:
        Gateway.seen = []
        url = f"https://127.0.0.1:{server.server_port}/verify"
        registry = realname.HttpRegistry(url, timeout=5, token="s3cr3t-gateway-token", ca_file=pki["ca"])
        assert registry.check("林晓红", RID).confirmed
        assert Gateway.seen[0]["authorization"] == "Bearer s3cr3t-gateway-token"
        settings = IdPSettings(registry_url=url, registry_token="s3cr3t-gateway-token")
        assert "s3cr3t" not in repr(settings)
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("url", ["http://registry.gov.example/verify", "http://10.0.0.5/verify", "ftp://127.0.0.1/verify"])
def test_plain_http_is_refused_except_to_this_machine(url):
    with pytest.raises(ValueError, match="https"):
        realname.HttpRegistry(url)
    with pytest.raises(ConfigError, match="https"):
        IdPSettings(registry_url=url)
    IdPSettings(registry_url="http://127.0.0.1:9000/verify")  # a development gateway on this machine
    IdPSettings(registry_url="https://registry.gov.example/verify")


def test_settings_that_cannot_work_are_refused_at_start(tmp_path):
    with pytest.raises(ConfigError, match="go together"):
        IdPSettings(registry_url="https://registry.gov.example/verify", registry_client_cert="/etc/ssl/adapter.pem")
    with pytest.raises(ConfigError, match="registry_timeout_seconds"):
        IdPSettings(registry_timeout_seconds=0)
    with pytest.raises(ValueError, match="not a file"):
        realname.HttpRegistry("https://registry.gov.example/verify", ca_file=str(tmp_path / "missing.pem"))
