"""docker/: what the image and the compose file promise, checked without a Docker engine.

The Dockerfile's runtime stage installs the CJK font the seal and licence drawing code
looks up (and its build check is run here, against this machine's fonts); the compose
file terminates TLS in nginx with a certificate from Hallmark's own CA, issued by a
one-shot service between `init` and the proxy; and that service's command, run here in
process on a real instance, issues a certificate that openssl verifies against
Hallmark's chain, that pkilint's CA/Browser Forum lint finds nothing wrong with but the
policy claim Hallmark deliberately does not make, and that a TLS client accepts. Where
Debian's nginx is installed, the compose file's nginx configuration itself is served
with that certificate (local ports and a stand-in upstream instead of Docker's DNS)
and answers as the file promises.
"""

from __future__ import annotations

import fnmatch
import http.client
import http.server
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ca import tlsserver
from signing.pdf import sealimage
from tests.conftest import free_port, initialised_copy, run_hallmark

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
BIN = Path(sys.executable).parent


# -- reading the files --------------------------------------------------------------------------


def dockerfile_stages() -> dict[str, list[str]]:
    """Each stage's instructions, continuation lines joined and comments dropped, by stage name."""
    stages: dict[str, list[str]] = {}
    current = None
    logical = ""
    for line in (DOCKER / "Dockerfile").read_text(encoding="utf-8").splitlines():
        if not logical and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        instruction = logical.strip()
        logical = ""
        match = re.match(r"FROM\s+\S+\s+AS\s+(\S+)", instruction, re.IGNORECASE)
        if match:
            current = match.group(1)
            stages[current] = []
        elif current is not None:
            stages[current].append(instruction)
    return stages


def apt_packages(instructions: list[str]) -> set[str]:
    packages: set[str] = set()
    for instruction in instructions:
        for command in re.split(r"&&|;", instruction):
            words = shlex.split(command.replace("RUN ", "", 1)) if "apt-get install" in command else []
            if words:
                packages |= {w for w in words[words.index("install") + 1 :] if not w.startswith("-")}
    return packages


def interpolate(value, env: dict[str, str] | None = None):
    """Compose's ``${VAR:-default}`` / ``${VAR:?message}`` with ``env`` (default: nothing set), ``$$`` as ``$``."""
    env = env or {}
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(match):
        name, how, default = match.group(1), match.group(2), match.group(3) or ""
        if name in env:
            return env[name]
        if how == ":?":
            return "x"  # a required variable (POSTGRES_PASSWORD): any value
        return default

    text = re.sub(r"(?<!\$)\$\{(\w+)(?:(:-|:\?)([^}]*))?\}", one, value)
    return text.replace("$$", "$")


@pytest.fixture(scope="module")
def compose() -> dict:
    return interpolate(yaml.safe_load((DOCKER / "compose.yaml").read_text(encoding="utf-8")))


def nginx_conf(compose) -> str:
    (config,) = [c for c in compose["services"]["proxy"]["configs"] if c["target"] == "/etc/nginx/conf.d/default.conf"]
    return compose["configs"][config["source"]]["content"]


def server_blocks(conf: str) -> dict[str, str]:
    """The text of each ``server { ... }`` block, by what it listens on."""
    blocks = {}
    for match in re.finditer(r"^server \{$", conf, re.MULTILINE):
        depth, end = 0, match.start()
        for end in range(match.start(), len(conf)):
            depth += {"{": 1, "}": -1}.get(conf[end], 0)
            if depth == 0 and conf[end] == "}":
                break
        block = conf[match.start() : end + 1]
        blocks[re.search(r"listen ([^;]+);", block).group(1)] = block
    return blocks


def location(block: str, prefix: str) -> str:
    match = re.search(r"location " + re.escape(prefix) + r" \{(.*?)\n\s*\}", block, re.DOTALL)
    assert match, f"no location {prefix}"
    return match.group(1)


def mounts(service: dict) -> dict[str, tuple[str, bool]]:
    """Volume mounts of a compose service: target -> (source, read_only)."""
    found = {}
    for entry in service.get("volumes", []):
        parts = entry.split(":")
        found[parts[1]] = (parts[0], parts[2:] == ["ro"])
    return found


# -- the image ----------------------------------------------------------------------------------


def test_the_runtime_stage_installs_the_cjk_font_the_drawing_code_looks_up():
    stages = dockerfile_stages()
    runtime = stages["runtime"]
    assert "fonts-noto-cjk" in apt_packages(runtime)
    # What the code picks on a machine with fonts-noto-cjk (this one: make run installs it) ...
    found = {weight: sealimage.cjk_font_path(weight) for weight in ("Bold", "Regular")}
    assert all(path and Path(path).name.startswith("NotoSerifCJK-") for path in found.values()), found
    owners = subprocess.run(["dpkg", "-S", *found.values()], capture_output=True, text=True)
    if owners.returncode == 0 or "not found" in owners.stderr:
        assert {line.split(":")[0] for line in owners.stdout.splitlines()} == {"fonts-noto-cjk"}, owners.stdout + owners.stderr
    # ... is not among the files the image tells dpkg to leave out.
    excluded = [m.group(1) for i in runtime for m in re.finditer(r"path-exclude=(\S+?)'", i)]
    assert excluded, "the runtime stage no longer trims the font package: drop this check or the comment"
    for path in found.values():
        assert not any(fnmatch.fnmatch(path, pattern) for pattern in excluded), (path, excluded)


SERVER_PACKAGES = ("core", "hsm", "ca", "idp", "signing", "licenses", "admin", "hallmark")


def test_every_program_the_server_looks_up_is_installed_in_the_runtime_stage():
    """What the server runs looks its program up with shutil.which; Debian says which package has it."""
    programs = set()
    for package in SERVER_PACKAGES:
        for source in (ROOT / package).rglob("*.py"):
            programs |= set(re.findall(r"shutil\.which\(\s*[\"']([\w.+-]+)[\"']\s*\)", source.read_text(encoding="utf-8")))
    assert "softhsm2-util" in programs  # the scan finds what it should
    installed = apt_packages(dockerfile_stages()["runtime"])
    for program in sorted(programs):
        path = shutil.which(program)
        assert path, f"{program} is not installed here; make run installs the server's programs (Makefile DEB_RUNTIME)"
        owner = subprocess.run(["dpkg", "-S", str(Path(path).resolve())], capture_output=True, text=True)
        assert owner.returncode == 0, owner.stderr
        package = owner.stdout.split(":")[0]
        assert package in installed, f"the server runs {program} ({package}), which the image does not install"


def test_the_image_build_fails_unless_the_font_lookup_finds_noto_serif_cjk():
    runtime = dockerfile_stages()["runtime"]
    (check,) = [i for i in runtime if "cjk_font_path" in i]
    command = check.removeprefix("RUN ").strip()
    assert command.startswith("python -c ")
    # The same shell command, with this venv's python first on PATH (the image's is /opt/hallmark/bin).
    result = subprocess.run(["sh", "-c", command], capture_output=True, text=True, env={"PATH": f"{BIN}:/usr/bin:/bin"}, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "NotoSerifCJK-Bold" in result.stdout and "NotoSerifCJK-Regular" in result.stdout
    # The check comes after the venv is copied in, so it tests the installed Hallmark.
    copy = next(n for n, i in enumerate(runtime) if i.startswith("COPY --from=build /opt/hallmark"))
    assert runtime.index(check) > copy


# -- the compose file ---------------------------------------------------------------------------


def test_the_proxy_terminates_tls_and_redirects_plain_http_except_pki(compose):
    proxy = compose["services"]["proxy"]
    published = {entry.rsplit(":", 1)[1]: entry.rsplit(":", 2)[1] for entry in proxy["ports"]}
    assert set(published) == {"80", "443"}
    https_port, http_port = published["443"], published["80"]
    conf = nginx_conf(compose)
    blocks = server_blocks(conf)
    assert set(blocks) == {"80", "443 ssl"}
    tls = blocks["443 ssl"]
    assert re.search(r"^\s*http2 on;", tls, re.MULTILINE)
    protocols = re.search(r"ssl_protocols ([^;]+);", tls).group(1).split()
    assert protocols == ["TLSv1.2", "TLSv1.3"]
    ciphers = re.search(r"ssl_ciphers ([^;]+);", tls).group(1).split(":")
    assert ciphers and all(c.startswith("ECDHE-") and ("GCM" in c or "CHACHA20" in c) for c in ciphers), ciphers
    assert "ssl_session_tickets off;" in tls
    hsts = re.search(r'add_header Strict-Transport-Security "max-age=(\d+)[^"]*" always;', tls)
    assert hsts and int(hsts.group(1)) >= 365 * 24 * 3600
    assert "proxy_pass http://hallmark;" in location(tls, "/")
    # The key and chain nginx reads are the files `hallmark ca server-cert` writes, in the volume it writes them to.
    certificate = Path(re.search(r"ssl_certificate (\S+);", tls).group(1))
    key = Path(re.search(r"ssl_certificate_key (\S+);", tls).group(1))
    assert (certificate.name, key.name) == (tlsserver.CHAIN_FILE, tlsserver.KEY_FILE) and certificate.parent == key.parent
    source, read_only = mounts(proxy)[str(certificate.parent)]
    assert read_only and source in compose["volumes"]
    command = compose["services"]["tls-cert"]["command"]
    assert mounts(compose["services"]["tls-cert"])[command[command.index("--dir") + 1]] == (source, False)
    # Plain http: everything redirected to the https port, but /pki/ (what certificates point to) answered.
    plain = blocks["80"]
    assert f"return 301 https://$host:{https_port}$request_uri;" in location(plain, "/")
    assert "proxy_pass http://hallmark;" in location(plain, "/pki/")
    env = compose["x-hallmark-env"]
    assert env["HALLMARK_PUBLIC_URL"] == f"https://127.0.0.1:{https_port}"
    assert env["HALLMARK_PKI_URL"] == f"http://127.0.0.1:{http_port}"
    # Forwarded headers, set once for every proxy_pass: a client's own X-SSL-Client-Cert never gets through.
    from idp.settings import IdPSettings

    top = conf[: conf.index("server {")]
    assert f'proxy_set_header {IdPSettings.client_cert_header} "";' in top
    assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in top
    assert "proxy_set_header X-Forwarded-Proto $scheme;" in top
    assert "proxy_set_header" not in tls and "proxy_set_header" not in plain  # or the ones above would not apply


def test_the_certificate_is_issued_after_init_and_before_the_proxy_starts(compose):
    services = compose["services"]
    tls_cert = services["tls-cert"]
    assert tls_cert["command"][:3] == ["hallmark", "ca", "server-cert"] and tls_cert["restart"] == "no"
    assert tls_cert["depends_on"]["init"] == {"condition": "service_completed_successfully"}
    assert services["proxy"]["depends_on"]["tls-cert"] == {"condition": "service_completed_successfully"}
    assert tls_cert["image"] == services["app"]["image"] and tls_cert["environment"] == services["app"]["environment"]
    # Same settings and token as the nodes; settings read-only (only `init` writes them).
    assert mounts(tls_cert)["/var/lib/hallmark"] == ("instance", True)
    assert mounts(tls_cert)["/var/lib/hallmark/softhsm/tokens"] == ("hsm-token", False)
    # The folder exists in the image owned by hallmark, so the empty volume mounted there is writable.
    folder = tls_cert["command"][tls_cert["command"].index("--dir") + 1]
    runtime = dockerfile_stages()["runtime"]
    assert any(re.search(r"install -d -o hallmark -g hallmark -m 07\d0 " + re.escape(folder) + r"\b", i) for i in runtime)


def test_the_app_trusts_forwarded_headers_from_the_proxy_only(compose, tmp_path):
    from hallmark import components

    proxy_address = compose["services"]["proxy"]["networks"]["default"]["ipv4_address"]
    (network,) = compose["networks"]["default"]["ipam"]["config"]
    subnet, dynamic = ipaddress.ip_network(network["subnet"]), ipaddress.ip_network(network["ip_range"])
    address = ipaddress.ip_address(proxy_address)
    assert address in subnet and address not in dynamic  # no other container can be given it
    env = compose["x-hallmark-env"]
    assert env["HALLMARK_TRUSTED_PROXIES"] == proxy_address
    # Every HALLMARK_ variable of the compose file is a setting Hallmark knows, with the value meant.
    environ = {k: v for k, v in env.items() if k.startswith("HALLMARK_")}
    settings = components.load_settings(tmp_path, environ=environ)
    assert settings.trusted_proxies == proxy_address
    assert settings.section("ca").pki_url == env["HALLMARK_PKI_URL"]
    assert settings.public_url.startswith("https://")


# -- the certificate the compose file issues ------------------------------------------------------


def _lint_errors(leaf: Path) -> set[str]:
    """pkilint's CA/B Forum TLS lint of ``leaf`` as a domain-validated certificate: the codes of ERROR and FATAL findings."""
    result = subprocess.run(
        [str(BIN / "lint_cabf_serverauth_cert"), "lint", "-t", "DV-FINAL-CERTIFICATE", "-s", "ERROR", "-f", "JSON", str(leaf)],
        capture_output=True,
        text=True,
    )
    assert result.stdout.startswith("{"), result.stdout + result.stderr  # its exit status counts the findings
    report = json.loads(result.stdout)
    return {finding["code"] for result in report["results"] for finding in result["finding_descriptions"]}


def _handshake(chain: Path, key: Path, root: Path, hostname: str) -> str:
    """A real TLS handshake: a server with ``chain`` and ``key``, a client trusting only ``root`` and checking ``hostname``."""
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.minimum_version = ssl.TLSVersion.TLSv1_2
    server_context.load_cert_chain(chain, key)
    client_context = ssl.create_default_context(cafile=str(root))
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve():
            connection, _ = listener.accept()
            try:
                with server_context.wrap_socket(connection, server_side=True) as tls:
                    tls.sendall(b"ok")
            except (ssl.SSLError, OSError):
                pass

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            client_context.wrap_socket(raw, server_hostname=hostname) as tls,
        ):
            answer = tls.recv(2).decode() + " " + tls.version()
        thread.join(10)
    return answer


def test_the_compose_command_issues_a_certificate_openssl_pkilint_and_tls_accept(compose, tmp_path):
    instance = initialised_copy(tmp_path / "instance")
    command = compose["services"]["tls-cert"]["command"]
    assert command[0] == "hallmark"
    args = command[1:]
    folder = tmp_path / "tls"
    args[args.index("--dir") + 1] = str(folder)
    # The names an operator sets (HALLMARK_TLS_NAMES) and a PKI address on them: the defaults
    # (localhost, 127.0.0.1) are internal names, which the CA/B Forum lint rightly reports.
    host = "hallmark.example.gov.cn"
    args[args.index("--san") + 1] = f"{host},ca.{host}"
    environ = {"HALLMARK_PKI_URL": f"http://{host}"}
    first = run_hallmark(instance, *args, **environ)
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stdout.startswith("issued ") and "no certificate yet" in first.stdout

    key_file, chain_file, root_file = (folder / n for n in (tlsserver.KEY_FILE, tlsserver.CHAIN_FILE, tlsserver.ROOT_FILE))
    assert key_file.stat().st_mode & 0o777 == 0o600
    chain = x509.load_pem_x509_certificates(chain_file.read_bytes())
    assert len(chain) == 2
    leaf = chain[0]
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    assert leaf.public_key() == key.public_key()
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == [host, f"ca.{host}"]
    assert leaf.subject.rfc4514_string() == f"CN={host},C=CN"
    aia = leaf.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert {d.access_location.value for d in aia} == {f"http://{host}/pki/ocsp", f"http://{host}/pki/ca/services.crt"}

    leaf_file, issuer_file = tmp_path / "leaf.pem", tmp_path / "issuer.pem"
    leaf_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    issuer_file.write_bytes(chain[1].public_bytes(serialization.Encoding.PEM))
    judge = ["openssl", "verify", "-x509_strict", "-purpose", "sslserver", "-verify_hostname", host]
    verified = subprocess.run(
        [*judge, "-CAfile", root_file, "-untrusted", issuer_file, leaf_file],
        capture_output=True,
        text=True,
    )
    assert verified.returncode == 0 and verified.stdout.strip().endswith(": OK"), verified.stdout + verified.stderr
    # Nothing but the reserved CA/B Forum policy OID, which Hallmark does not claim (ca/profiles.toml says why).
    assert _lint_errors(leaf_file) == {"cabf.serverauth.subscriber_missing_reserved_policy_oid"}
    assert _handshake(chain_file, key_file, root_file, host).startswith("ok TLSv1.")

    # Again: nothing is due, nothing changes.
    before = {p.name: p.read_bytes() for p in (key_file, chain_file, root_file)}
    again = run_hallmark(instance, *args, **environ)
    assert again.returncode == 0 and again.stdout.startswith("kept "), again.stdout + again.stderr
    assert {p.name: p.read_bytes() for p in (key_file, chain_file, root_file)} == before

    # Revoked: the next run issues a new key and certificate.
    revoked = run_hallmark(instance, "ca", "revoke", format(leaf.serial_number, "x"), "--reason", "keyCompromise")
    assert revoked.returncode == 0, revoked.stdout + revoked.stderr
    renewed = run_hallmark(instance, *args, **environ)
    assert renewed.returncode == 0 and "the certificate is revoked" in renewed.stdout, renewed.stdout + renewed.stderr
    assert key_file.read_bytes() != before[tlsserver.KEY_FILE]
    new_leaf = x509.load_pem_x509_certificates(chain_file.read_bytes())[0]
    assert new_leaf.serial_number != leaf.serial_number

    # Other names: a new one as well.
    args[args.index("--san") + 1] = host
    changed = run_hallmark(instance, *args, **environ)
    assert changed.returncode == 0 and "names" in changed.stdout and changed.stdout.startswith("issued "), changed.stdout
    shutil.rmtree(folder)


# -- the proxy's configuration, served by nginx -----------------------------------------------------


class _Echo(http.server.BaseHTTPRequestHandler):
    """Stands in for the app nodes: answers with the path and the headers the proxy sent."""

    def do_GET(self):
        body = json.dumps({"path": self.path, "headers": dict(self.headers.items())}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def _nginx_version(binary: str) -> tuple[int, ...]:
    text = subprocess.run([binary, "-v"], capture_output=True, text=True).stderr
    return tuple(int(n) for n in re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", text).groups())


def _serve_conf(conf: str, *, binary: str, backend: int, http_port: int, https_port: int, tls: Path) -> str:
    """The compose file's nginx configuration on this machine: local ports, the echo server as the
    upstream (no Docker DNS), the certificate folder where the test wrote it. Nothing else changes,
    except `http2 on` on an nginx older than 1.25.1 (Debian bookworm's 1.22), which spells it on `listen`."""
    replaced = [
        ("resolver 127.0.0.11 valid=10s ipv6=off;", ""),
        ("server app:8000 resolve;", f"server 127.0.0.1:{backend};"),
        ("listen 80;", f"listen 127.0.0.1:{http_port};"),
        ("listen 443 ssl;", f"listen 127.0.0.1:{https_port} ssl;"),
        ("/etc/nginx/tls/", f"{tls}/"),
    ]
    if _nginx_version(binary) < (1, 25, 1):
        replaced += [("http2 on;", ""), (f"listen 127.0.0.1:{https_port} ssl;", f"listen 127.0.0.1:{https_port} ssl http2;")]
    for old, new in replaced:
        assert old in conf, old
        conf = conf.replace(old, new)
    return conf


def _get(url: str, context: ssl.SSLContext | None = None, **headers) -> tuple[int, dict, str]:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https":
        connection = http.client.HTTPSConnection(parts.hostname, parts.port, context=context, timeout=10)
    else:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        connection.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""), headers=headers)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read().decode()
    finally:
        connection.close()


@pytest.mark.skipif(shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists(), reason="Debian's nginx is not installed")
def test_nginx_serves_the_compose_configuration_with_the_issued_certificate(compose, tmp_path):
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    instance = initialised_copy(tmp_path / "instance")
    tls = tmp_path / "tls"
    issued = run_hallmark(instance, "ca", "server-cert", "--san", "localhost,127.0.0.1", "--dir", tls)
    assert issued.returncode == 0, issued.stdout + issued.stderr

    backend = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    http_port, https_port = free_port(), free_port()
    folder = tmp_path / "nginx"
    folder.mkdir()
    user = "user root root;\n" if os.geteuid() == 0 else ""
    site = _serve_conf(
        nginx_conf(compose), binary=binary, backend=backend.server_address[1], http_port=http_port, https_port=https_port, tls=tls
    )
    (folder / "nginx.conf").write_text(
        f"{user}worker_processes 1;\ndaemon off;\npid {folder}/nginx.pid;\nerror_log {folder}/error.log warn;\n"
        f"events {{ worker_connections 64; }}\nhttp {{\n    access_log off;\n"
        + "".join(f"    {kind}_temp_path {folder}/{kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        + site
        + "\n}\n"
    )
    process = subprocess.Popen(
        [binary, "-p", str(folder), "-c", str(folder / "nginx.conf"), "-e", str(folder / "error.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,  # it writes to error.log (-e)
        start_new_session=True,
    )
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", https_port), timeout=1).close()
                break
            except OSError:
                assert process.poll() is None, (folder / "error.log").read_text()
                time.sleep(0.1)
        published = {entry.rsplit(":", 1)[1]: entry.rsplit(":", 2)[1] for entry in compose["services"]["proxy"]["ports"]}

        # Plain http: a redirect to the published https port, except /pki/.
        status, headers, _ = _get(f"http://127.0.0.1:{http_port}/login?next=%2F")
        assert status == 301 and headers["location"] == f"https://127.0.0.1:{published['443']}/login?next=%2F"
        status, headers, body = _get(f"http://127.0.0.1:{http_port}/pki/ca/root.crt", **{"X-SSL-Client-Cert": "forged"})
        seen = json.loads(body)
        assert status == 200 and seen["path"] == "/pki/ca/root.crt" and seen["headers"]["X-Forwarded-Proto"] == "http"
        assert "X-SSL-Client-Cert" not in seen["headers"]

        # https with the certificate from Hallmark's CA, checked against Hallmark's root and the name.
        trusting_root = ssl.create_default_context(cafile=str(tls / tlsserver.ROOT_FILE))
        status, headers, body = _get(
            f"https://localhost:{https_port}/healthz", trusting_root, **{"X-SSL-Client-Cert": "forged", "X-Forwarded-For": "192.0.2.66"}
        )
        seen = json.loads(body)["headers"]
        assert status == 200 and headers["strict-transport-security"] == "max-age=63072000"
        assert seen["X-Forwarded-Proto"] == "https" and "X-SSL-Client-Cert" not in seen
        # nginx appends the peer it saw: the app, trusting only the proxy, takes that right-most entry.
        assert seen["X-Forwarded-For"] == "192.0.2.66, 127.0.0.1"
        with (
            socket.create_connection(("127.0.0.1", https_port), timeout=10) as raw,
            trusting_root.wrap_socket(raw, server_hostname="127.0.0.1") as by_address,
        ):
            assert by_address.version() == "TLSv1.3"
        tls12 = ssl.create_default_context(cafile=str(tls / tlsserver.ROOT_FILE))
        tls12.maximum_version = ssl.TLSVersion.TLSv1_2
        with (
            socket.create_connection(("127.0.0.1", https_port), timeout=10) as raw,
            tls12.wrap_socket(raw, server_hostname="localhost") as older,
        ):
            assert older.version() == "TLSv1.2" and older.cipher()[0].startswith("ECDHE-ECDSA-")
        # A client that trusts only the system's CAs refuses it: the trust comes from Hallmark's root.
        with pytest.raises(ssl.SSLCertVerificationError):
            _get(f"https://localhost:{https_port}/healthz", ssl.create_default_context())
    finally:
        os.killpg(process.pid, signal.SIGQUIT)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
        backend.shutdown()
        backend.server_close()


def test_the_approval_profile_runs_the_examples_beside_hallmark(compose):
    """examples/approval in its own profile: the scripts exist, mounted read-only; each knows Hallmark's public URL and
    trusts its root; its events endpoint is on the compose network's gateway, which the app nodes reach."""
    services = compose["services"]
    (network,) = compose["networks"]["default"]["ipam"]["config"]
    gateway = str(next(ipaddress.ip_network(network["subnet"]).hosts()))
    env = compose["x-hallmark-env"]
    for name, script in (("approval", "approval.py"), ("approval-2", "approval.py"), ("payment", "payment.py")):
        service = services[name]
        assert service["profiles"] == ["approval"] and service["network_mode"] == "host" and service["read_only"]
        assert service["command"] == ["python", f"/examples/approval/{script}"]
        assert (ROOT / "examples" / "approval" / script).is_file()
        assert mounts(service)["/examples"] == ("../examples", True)
        assert mounts(service)["/etc/hallmark-tls"][1] and service["environment"]["REQUESTS_CA_BUNDLE"].startswith("/etc/hallmark-tls/")
        idp = service["environment"].get("APPROVAL_IDP") or service["environment"]["PAYMENT_IDP"]
        assert idp == env["HALLMARK_PUBLIC_URL"]
    ids = {services[n]["environment"]["APPROVAL_CLIENT_ID"] for n in ("approval", "approval-2")}
    assert ids == {"food-approval", "food-approval-2"}
    for name in ("approval", "approval-2"):
        events = services[name]["environment"]["APPROVAL_EVENTS_URL"]
        assert events == f"http://{gateway}:{services[name]['environment']['APPROVAL_PORT']}/events"
    assert "HALLMARK_EVENT_ENDPOINT_HOSTS" in env and services["app"]["environment"] == env
