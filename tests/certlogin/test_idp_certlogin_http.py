"""Certificate login over real HTTP against ``hallmark serve``, judged by an independent RP library.

The hall is Authlib's requests client (code flow + PKCE); the ID token is checked
against the JWKS with joserfc. The USB key is a SoftHSM2 token in this process; the
server's CA (its own instance and token) issues certificates through
``hallmark ca issue``; a CA nobody recognises is trusted with ``hallmark ca trust add``.
The proxy path is tried from 127.0.0.1 (not a configured proxy) and from 127.0.0.2
(the configured one).
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, date, datetime, timedelta
from urllib.parse import quote

import pytest
import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from joserfc import jwt
from joserfc.jwk import KeySet
from requests.adapters import HTTPAdapter

from core.identifiers import generate_resident_id
from tests.certlogin_fixtures import DATA_CSRF, UsbKey, query_of, signed_fields, usb_key  # noqa: F401
from tests.conftest import initialised_copy, run_hallmark, start_server, stop_server

pytestmark = pytest.mark.slow
CB = "http://127.0.0.1:8001/callback"


class Site:
    def __init__(self, instance, base, hall, usb):
        self.instance, self.base, self.hall_client, self.usb = instance, base, hall, usb
        self.meta = requests.get(base + "/.well-known/openid-configuration", timeout=10).json()
        self.counter = iter(range(1, 1000))

    def cli(self, *args) -> str:
        result = run_hallmark(self.instance, *args)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def person(self) -> tuple[str, str, str]:
        """(username, password, resident ID) of a new account verified at the counter."""
        username = "h" + uuid.uuid4().hex[:8]
        password = re.search(r"password \(shown only now\): (\S+)", self.cli("idp", "account", "add", "--username", username)).group(1)
        resident = generate_resident_id("350102", date(1960, 1, 1) + timedelta(days=next(self.counter) * 97), next(self.counter) % 1000)
        self.cli(
            "idp",
            "verify-at-counter",
            "--account",
            username,
            "--resident-id",
            resident,
            "--name",
            "王五",
            "--clerk",
            "clerk1",
            "--location",
            "福州市民服务中心",
            "--document",
            "resident-card",
        )
        return username, password, resident

    def certificate(self, signer, resident: str, tmp_path, profile="person-auth") -> x509.Certificate:
        csr = tmp_path / f"{uuid.uuid4().hex}.csr"
        out = tmp_path / f"{uuid.uuid4().hex}.pem"
        csr.write_bytes(UsbKey.csr(signer))
        self.cli("ca", "issue", "--profile", profile, "--csr", str(csr), "--subject-id", resident, "--name", "王五", "--out", str(out))
        return x509.load_pem_x509_certificate(out.read_bytes())

    def hall(self) -> OAuth2Session:
        c = self.hall_client
        return OAuth2Session(c["client_id"], c["client_secret"], scope="openid profile", redirect_uri=CB, code_challenge_method="S256")

    def id_claims(self, token: dict) -> dict:
        keyset = KeySet.import_key_set(requests.get(self.meta["jwks_uri"], timeout=10).json())
        claims = jwt.decode(token["id_token"], keyset, algorithms=["ES256", "RS256"]).claims
        jwt.JWTClaimsRegistry(
            iss={"essential": True, "value": self.meta["issuer"]}, aud={"essential": True, "value": "city-hall"}
        ).validate(claims)
        return claims


@pytest.fixture(scope="module")
def site(tmp_path_factory, usb_key):
    instance = tmp_path_factory.mktemp("certlogin-http")
    initialised_copy(instance)
    hall = json.loads(
        run_hallmark(
            instance,
            "idp",
            "client",
            "add",
            "--json",
            "--name",
            "市网上办事大厅",
            "--client-id",
            "city-hall",
            "--redirect-uri",
            CB,
            "--scope",
            "openid profile",
            "--first-party",
        ).stdout
    )
    assert run_hallmark(instance, "idp", "account", "add", "--username", "clerk1", "--role", "clerk").returncode == 0
    assert run_hallmark(instance, "idp", "matter", "set", "house-transfer", "--level", "3", "--name", "房屋转移登记").returncode == 0
    process, base = start_server(instance, workers=2, HALLMARK_TRUSTED_PROXIES="127.0.0.2")
    yield Site(instance, base, hall, usb_key)
    stop_server(process)


class FromAddress(HTTPAdapter):
    """Connects from a chosen loopback address (127.0.0.2 plays the reverse proxy)."""

    def __init__(self, address: str):
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


def usb_key_login(site, browser: requests.Session, url: str, signer, certificate, purpose="login") -> requests.Response:
    """What the login page's script does: challenge, agent signature, post; returns the IdP's JSON answer."""
    page = browser.get(site.base + url, timeout=10)
    assert page.status_code == 200 and "data-cert-login" in page.text
    csrf = DATA_CSRF.search(page.text).group(1)
    next_url = re.search(r'data-next="([^"]*)"', page.text).group(1).replace("&amp;", "&")
    asked = browser.post(
        site.base + "/login/cert/challenge",
        data={"csrf_token": csrf, "purpose": purpose},
        headers={"Accept": "application/json"},
        timeout=10,
    )
    assert asked.status_code == 200, asked.text
    fields = signed_fields(asked.json()["challenge"], signer, certificate)
    return browser.post(
        site.base + "/login/cert", data={"csrf_token": csrf, "next": next_url, **fields}, headers={"Accept": "application/json"}, timeout=30
    )


def follow_to_hall(site, browser, location: str) -> str:
    for _ in range(8):
        response = browser.get(location if location.startswith("http") else site.base + location, allow_redirects=False, timeout=10)
        location = response.headers.get("Location", "")
        if location.startswith(CB):
            return location
        assert response.status_code in (302, 303), response.text
    raise AssertionError("too many redirects")


def test_usb_key_login_reaches_level_3_with_hwk_in_the_id_token(site, tmp_path):
    username, _, resident = site.person()
    signer = site.usb.new_key()
    certificate = site.certificate(signer, resident, tmp_path)
    browser, hall = requests.Session(), site.hall()
    verifier, nonce = generate_token(48), generate_token(20)
    url, state = hall.create_authorization_url(
        site.meta["authorization_endpoint"], code_verifier=verifier, nonce=nonce, acr_values="urn:hallmark:loa:3"
    )
    first = browser.get(url, allow_redirects=False, timeout=10)
    assert first.headers["Location"].startswith("/login?next=")
    done = usb_key_login(site, browser, first.headers["Location"], signer, certificate)
    assert done.status_code == 200, done.text
    location = follow_to_hall(site, browser, done.json()["redirect"])
    token = hall.fetch_token(site.meta["token_endpoint"], authorization_response=location, code_verifier=verifier, state=state)
    claims = site.id_claims(token)
    assert claims["acr"] == "urn:hallmark:loa:3" and claims["amr"] == ["hwk"] and claims["nonce"] == nonce
    info = hall.get(site.meta["userinfo_endpoint"], timeout=10).json()
    assert info["acr"] == "urn:hallmark:loa:3" and "hwk" in info["amr"]
    account = browser.get(site.base + "/account", timeout=10).text
    assert "我的数字证书" in account and resident not in account

    # The same challenge cannot be used twice.
    page = browser.get(site.base + "/login", timeout=10)
    csrf = DATA_CSRF.search(page.text).group(1)
    challenge = browser.post(site.base + "/login/cert/challenge", data={"csrf_token": csrf}, headers={"Accept": "application/json"}).json()
    fields = {"csrf_token": csrf, **signed_fields(challenge["challenge"], signer, certificate)}
    assert browser.post(site.base + "/login/cert", data=fields, headers={"Accept": "application/json"}).status_code == 200
    replay = browser.post(site.base + "/login/cert", data=fields, headers={"Accept": "application/json"})
    assert replay.status_code == 400 and replay.json()["code"] == "challenge_replayed"


def test_step_up_from_real_name_to_certificate_without_the_password(site, tmp_path):
    username, password, resident = site.person()
    signer = site.usb.new_key("rsa-2048")
    certificate = site.certificate(signer, resident, tmp_path)
    browser, hall = requests.Session(), site.hall()
    verifier = generate_token(48)
    url, state = hall.create_authorization_url(site.meta["authorization_endpoint"], code_verifier=verifier, matter="house-transfer")
    login = browser.get(url, allow_redirects=False, timeout=10).headers["Location"]
    page = browser.get(site.base + login, timeout=10)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    posted = browser.post(
        site.base + "/login",
        data={"csrf_token": csrf, "next": query_of(login)["next"], "identifier": username, "password": password},
        allow_redirects=False,
        timeout=10,
    )
    step = browser.get(site.base + posted.headers["Location"], allow_redirects=False, timeout=10).headers["Location"]
    assert step.startswith("/login/step-up?") and query_of(step)["level"] == "3"
    step_page = browser.get(site.base + step, timeout=10).text
    assert 'name="password"' not in step_page  # only the missing factor is asked for
    done = usb_key_login(site, browser, step, signer, certificate, purpose="step-up")
    assert done.status_code == 200, done.text
    location = follow_to_hall(site, browser, done.json()["redirect"])
    claims = site.id_claims(
        hall.fetch_token(site.meta["token_endpoint"], authorization_response=location, code_verifier=verifier, state=state)
    )
    assert claims["acr"] == "urn:hallmark:loa:3" and claims["amr"] == ["hwk", "pwd"]


def test_unrecognised_ca_is_refused_until_trusted_with_the_cli(site, tmp_path):
    username, _, resident = site.person()
    signer = site.usb.new_key()
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Fujian Provincial CA"),
            x509.NameAttribute(NameOID.COMMON_NAME, "Fujian Provincial Root CA"),
        ]
    )
    root = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
                    x509.NameAttribute(NameOID.SERIAL_NUMBER, f"IDCCN-{resident}"),
                    x509.NameAttribute(NameOID.COMMON_NAME, "王五"),
                ]
            )
        )
        .issuer_name(ca_name)
        .public_key(signer.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    refused = usb_key_login(site, requests.Session(), "/login", signer, leaf)
    assert refused.status_code == 400 and refused.json()["code"] == "untrusted"
    root_file = tmp_path / "fujian-root.pem"
    root_file.write_bytes(root.public_bytes(serialization.Encoding.PEM))
    # The leaf names no CRL or OCSP location: under the soft policy that is accepted with a note.
    site.cli("ca", "trust", "add", str(root_file), "--revocation", "soft", "--note", "provincial CA")
    accepted = usb_key_login(site, requests.Session(), "/login", signer, leaf)
    assert accepted.status_code == 200, accepted.text


def test_forwarded_certificate_is_accepted_only_from_the_configured_proxy(site, tmp_path):
    username, _, resident = site.person()
    signer = site.usb.new_key()
    certificate = site.certificate(signer, resident, tmp_path)
    header = {"X-SSL-Client-Cert": quote(certificate.public_bytes(serialization.Encoding.PEM).decode(), safe="")}

    def attempt(browser):
        page = browser.get(site.base + "/login", headers=header, timeout=10)
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        answer = browser.post(
            site.base + "/login/cert/tls", data={"csrf_token": csrf, "next": "/account"}, headers=header, allow_redirects=False, timeout=30
        )
        return page, answer

    direct = requests.Session()
    page, answer = attempt(direct)
    assert 'action="/login/cert/tls"' not in page.text and answer.status_code == 403 and "不接受来自该地址的代理转发证书" in answer.text

    proxy = requests.Session()
    proxy.mount("http://", FromAddress("127.0.0.2"))
    page, answer = attempt(proxy)
    assert 'action="/login/cert/tls"' in page.text
    assert answer.status_code == 303 and answer.headers["Location"] == "/account", answer.text
    assert "第 3 级" in proxy.get(site.base + "/account", timeout=10).text
