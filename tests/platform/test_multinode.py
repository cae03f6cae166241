"""Several nodes, proven: two ``hallmark serve`` nodes on one PostgreSQL database and one SoftHSM2 token, behind nginx.

The harness is ``tests/multinode.py`` (``make multinode`` runs this module alone). Each test
does something through node A and asks node B (or the other way round), over real HTTP:
an SSO session, single logout to every relying party exactly once, licence status events (SETs) to a subscriber
exactly once while both nodes deliver, a revocation seen by
B's CRL at once and its OCSP responder within the documented delay, signing keys rotated on A used and published by B,
the lockout kept in the database, and the client's address passed through the proxy.
PostgreSQL pass only (HALLMARK_TEST_POSTGRES=1).
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from core import db as core_db
from core.models import AuditEvent, OutboxMessage
from tests.idp.test_idp_oidc_http import PASSWORD, follow, sign_in_through_form
from tests.logout_receiver import Receiver, check_logout_token
from tests.multinode import PROXY_ADDRESS, Cluster, allow_driving_licences, driving_licence_order, upstream_of, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def cluster(postgres, tmp_path_factory):
    name = f"multinode_{uuid.uuid4().hex[:8]}"
    url = postgres.create_database(name)
    # The licence events' subscriber listens on 127.0.0.1 over http: allowed here as an intranet host would be.
    made = Cluster.create(tmp_path_factory.mktemp("multinode"), url, nodes=2, HALLMARK_EVENT_ENDPOINT_HOSTS="127.0.0.1")
    engine = core_db.make_engine(url)
    made.sessions = core_db.make_session_factory(engine)
    try:
        made.start(workers=1)
        yield made
    except BaseException:
        print(made.logs())
        raise
    finally:
        made.stop()
        engine.dispose()
        postgres.drop_database(name)


@pytest.fixture(scope="module")
def receiver():
    r = Receiver()
    yield r
    r.close()


def a(cluster) -> str:
    return cluster.nodes[0].base


def b(cluster) -> str:
    return cluster.nodes[1].base


def new_account(cluster, password: str = PASSWORD) -> tuple[str, str]:
    from idp.people import accounts

    username = "n" + uuid.uuid4().hex[:10]
    with core_db.transaction(cluster.sessions) as db:
        return accounts.register(db, identifier=username, password=password, display_name="陈晓燕").id, username


def audit_ok(cluster) -> None:
    result = cluster.cli(cluster.nodes[1].instance, "audit", "verify")
    assert result.returncode == 0, result.stdout + result.stderr


def test_nginx_sends_requests_to_both_nodes(cluster):
    seen = {upstream_of(requests.get(cluster.base + "/healthz", timeout=10)) for _ in range(6)}
    assert seen == {f"127.0.0.1:{node.port}" for node in cluster.nodes}
    health = requests.get(b(cluster) + "/healthz", timeout=10).json()
    assert health["status"] == "ok" and health["database"]["dialect"] == "postgresql"


def _hall(cluster, receiver, name: str, port: int) -> dict:
    return cluster.add_client(
        "--name",
        f"{name} 大厅",
        "--client-id",
        f"{name}-{uuid.uuid4().hex[:6]}",
        "--redirect-uri",
        f"http://127.0.0.1:{port}/cb",
        "--scope",
        "openid profile",
        "--first-party",
        "--backchannel-logout-uri",
        f"{receiver.base}/{name}",
        "--post-logout-redirect-uri",
        f"http://127.0.0.1:{port}/bye",
    )


def _follow(browser, node: str, url: str, *, stop_at: str):
    """``follow``, accepting the privacy notice on the way when the IdP asks for it, as the person would."""
    import re

    for _ in range(4):
        answer = follow(browser, node, url, stop_at=stop_at)
        page = answer.text if answer.status_code == 200 else ""
        form = re.search(r'name="accept" value="([^"]+)"', page)
        if 'action="/account/privacy/accept"' not in page or form is None:
            return answer
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        next_url = re.search(r'name="next" value="([^"]*)"', page).group(1).replace("&amp;", "&")
        accepted = browser.post(
            node + "/account/privacy/accept",
            data={"csrf_token": csrf, "next": next_url, "accept": form.group(1)},
            allow_redirects=False,
            timeout=10,
        )
        assert accepted.status_code == 303, accepted.text[:500]
        url = accepted.headers["Location"]
    raise AssertionError("the privacy notice was asked for again and again")


def _authorize(browser, node: str, client: dict, *, username: str | None):
    """The code flow at ``node``: a login page only when ``username`` is given. Returns (rp, token, id-token claims)."""
    from joserfc import jwt
    from joserfc.jwk import KeySet

    rp = OAuth2Session(
        client["client_id"],
        client["client_secret"],
        scope="openid profile",
        redirect_uri=client["redirect_uris"][0],
        code_challenge_method="S256",
    )
    verifier, nonce = generate_token(48), generate_token(16)
    url, state = rp.create_authorization_url(node + "/oauth/authorize", code_verifier=verifier, nonce=nonce)
    first = browser.get(url, allow_redirects=False, timeout=10)
    assert first.status_code in (302, 303), first.text
    if username is None:
        assert first.headers["Location"].startswith(client["redirect_uris"][0]), "SSO: no login page expected"
        answer = first
    else:
        assert first.headers["Location"].startswith("/login?next="), first.headers["Location"]
        back = sign_in_through_form(browser, node, first.headers["Location"], username)
        answer = _follow(browser, node, back, stop_at=client["redirect_uris"][0])
    assert "Location" in answer.headers, (answer.status_code, answer.url, answer.text[-2500:])
    location = answer.headers["Location"]
    assert parse_qs(urlsplit(location).query)["state"] == [state]
    token = rp.fetch_token(node + "/oauth/token", authorization_response=location, code_verifier=verifier, state=state)
    jwks = requests.get(node + "/jwks.json", timeout=10).json()
    claims = jwt.decode(token["id_token"], KeySet.import_key_set(jwks), algorithms=["ES256", "RS256"]).claims
    assert claims["nonce"] == nonce
    return rp, token, claims


def test_sso_made_through_a_is_honoured_by_b_and_logout_at_b_reaches_every_hall_once(cluster, receiver):
    east, west = _hall(cluster, receiver, "east", 9101), _hall(cluster, receiver, "west", 9102)
    account_id, username = new_account(cluster)
    browser = requests.Session()  # cookies are per host, so A, B and nginx (all 127.0.0.1) share the jar

    _, east_token, east_claims = _authorize(browser, a(cluster), east, username=username)
    west_rp, west_token, west_claims = _authorize(browser, b(cluster), west, username=None)
    assert east_claims["sid"] == west_claims["sid"] and west_claims["sub"] == account_id
    assert east_claims["iss"] == west_claims["iss"] == cluster.base  # both nodes are one issuer: the proxy's address
    info = requests.get(a(cluster) + "/oauth/userinfo", headers={"Authorization": f"Bearer {west_token['access_token']}"}, timeout=10)
    assert info.status_code == 200 and info.json()["sub"] == account_id  # B's token, honoured by A
    # And through nginx, whichever node answers.
    again = _authorize(browser, cluster.base, west, username=None)[2]
    assert again["sid"] == east_claims["sid"]

    # RP-initiated logout at B, with A's ID token as the hint.
    bye = east["post_logout_redirect_uris"][0]
    ended = follow(
        browser,
        b(cluster),
        b(cluster)
        + "/oauth/logout?"
        + urlencode({"id_token_hint": east_token["id_token"], "post_logout_redirect_uri": bye, "state": "s1"}),
        stop_at="http://127.0.0.1:9101",
    )
    assert ended.status_code == 200 and f'href="{bye}?state=s1"' in ended.text, ended.text[:500]
    jwks = requests.get(a(cluster) + "/jwks.json", timeout=10).json()
    for hall, claims in ((east, east_claims), (west, west_claims)):
        path = "/" + hall["client_id"].split("-")[0]
        token = receiver.wait_for(path, timeout=30)[0]
        got = check_logout_token(token, jwks, issuer=cluster.base, client_id=hall["client_id"])
        assert got["sid"] == claims["sid"]
    # Both nodes run the outbox job every second: give them several rounds to send a notice twice.
    sid = east_claims["sid"]

    def delivered():
        with cluster.sessions() as db:
            rows = [m for m in db.scalars(select(OutboxMessage)) if f":{sid}:" in (m.dedupe_key or "")]
        return rows if len(rows) == 2 and all(m.state == "delivered" for m in rows) else None

    rows = wait_until(delivered, timeout=15, message="both notices delivered")
    time.sleep(4)
    assert receiver.tokens("/east") == receiver.tokens("/east")[:1] and len(receiver.tokens("/east")) == 1
    assert len(receiver.tokens("/west")) == 1
    assert sorted(m.attempts for m in rows) == [1, 1]
    # The session is gone on every node: A's userinfo refuses B's token.
    assert (
        requests.get(
            a(cluster) + "/oauth/userinfo", headers={"Authorization": f"Bearer {west_token['access_token']}"}, timeout=10
        ).status_code
        == 401
    )
    assert west_rp is not None
    audit_ok(cluster)


@pytest.fixture(scope="module")
def ca_client(cluster):
    added = cluster.add_client("--name", "证书审批系统", "--grant", "client_credentials", "--scope", "ca:issue ca:read ca:revoke")
    return added["client_id"], added["client_secret"]


def _token(node: str, client, scope: str) -> str:
    answer = requests.post(node + "/oauth/token", data={"grant_type": "client_credentials", "scope": scope}, auth=client, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()["access_token"]


def _issue(node: str, token: str) -> dict:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
    body = {
        "profile": "person-auth",
        "csr": csr.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode(),
        "subject_id": "11010519491231002X",
        "name": "李四",
    }
    issued = requests.post(node + "/api/ca/certificates", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert issued.status_code == 201, issued.text
    return issued.json()


def _ocsp_status(node: str, certificate: x509.Certificate, issuer: x509.Certificate):
    request = ocsp.OCSPRequestBuilder().add_certificate(certificate, issuer, hashes.SHA1()).build()
    answer = requests.post(
        node + "/pki/ocsp",
        data=request.public_bytes(serialization.Encoding.DER),
        headers={"Content-Type": "application/ocsp-request"},
        timeout=10,
    )
    assert answer.status_code == 200
    parsed = ocsp.load_der_ocsp_response(answer.content)
    assert parsed.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    return parsed.certificate_status


def test_a_certificate_revoked_through_a_is_revoked_at_b_within_the_documented_delay(cluster, ca_client):
    """Documented delay (docs/ca.md): the CRL at once, OCSP within ca.status.ocsp.REVOCATION_DELAY. The revocation
    re-signs the OCSP response and publishes the CRL in its own transaction, and every responder process re-reads the
    authority's CRL number at most that long after it last did before it serves a cached answer again."""
    from ca.status.ocsp import REVOCATION_DELAY

    token = _token(a(cluster), ca_client, "ca:issue ca:revoke")
    issued = _issue(a(cluster), token)
    certificate = x509.load_pem_x509_certificate(issued["certificate"].encode())
    issuer = x509.load_der_x509_certificate(requests.get(b(cluster) + f"/pki/ca/{issued['authority']}.crt", timeout=10).content)
    assert _ocsp_status(b(cluster), certificate, issuer) == ocsp.OCSPCertStatus.GOOD  # B has it cached as good now
    crl_before = x509.load_der_x509_crl(requests.get(b(cluster) + f"/pki/crl/{issued['authority']}.crl", timeout=10).content)
    assert crl_before.get_revoked_certificate_by_serial_number(certificate.serial_number) is None

    revoked = requests.post(
        a(cluster) + f"/api/ca/certificates/{issued['serial']}/revoke",
        json={"reason": "keyCompromise"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert revoked.status_code == 200, revoked.text
    # The CRL: no waiting, the very next request to B.
    crl = x509.load_der_x509_crl(requests.get(b(cluster) + f"/pki/crl/{issued['authority']}.crl", timeout=10).content)
    assert crl.is_signature_valid(issuer.public_key())
    assert crl.get_revoked_certificate_by_serial_number(certificate.serial_number) is not None
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number > (
        crl_before.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    )
    # OCSP: any request made the documented delay after the revocation returned (so after its commit) says revoked.
    time.sleep(REVOCATION_DELAY)
    assert _ocsp_status(b(cluster), certificate, issuer) == ocsp.OCSPCertStatus.REVOKED


def _kid(token: str) -> str:
    return json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))["kid"]


def test_keys_rotated_on_a_are_used_and_published_by_b(cluster, ca_client):
    from joserfc import jwt
    from joserfc.jwk import KeySet

    before = {k["kid"] for k in requests.get(b(cluster) + "/jwks.json", timeout=10).json()["keys"]}
    rotated = cluster.hallmark("idp", "rotate-keys", "--alg", "ES256", "--immediately", node=0)
    new_kid = rotated.split("new key ", 1)[1].split()[0]
    assert new_kid not in before
    # Each process caches the keys for idp.oidc.keys.CACHE_SECONDS (10 s), the JWKS response for max-age 30 s.
    published = wait_until(
        lambda: {k["kid"] for k in requests.get(b(cluster) + "/jwks.json", timeout=10).json()["keys"]} >= before | {new_kid},
        timeout=30,
        message="B publishes the new key",
    )
    assert published

    def signed_with_the_new_key():
        token = _token(b(cluster), ca_client, "ca:read")
        return token if _kid(token) == new_kid else None

    token = wait_until(signed_with_the_new_key, timeout=30, message="B signs with the key made on A")
    jwks = requests.get(a(cluster) + "/jwks.json", timeout=10).json()
    assert jwt.decode(token, KeySet.import_key_set(jwks), algorithms=["ES256"]).claims["client_id"] == ca_client[0]
    # B's own API takes the token signed with the new key, and so does A's.
    for node in (a(cluster), b(cluster)):
        listed = requests.get(node + "/api/ca/certificates?limit=1", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert listed.status_code == 200, listed.text


class _From(requests.adapters.HTTPAdapter):
    """Connections from another loopback address (another client, as the nodes see it)."""

    def __init__(self, address: str):
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


def _login(node: str, username: str, password: str, *, source: str | None = None, **headers) -> requests.Response:
    browser = requests.Session()
    if source is not None:
        browser.mount("http://", _From(source))
    page = browser.get(node + "/login", timeout=10, headers=headers)
    import re

    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    return browser.post(
        node + "/login",
        data={"csrf_token": csrf, "next": "/account", "identifier": username, "password": password},
        headers=headers,
        allow_redirects=False,
        timeout=30,
    )


def test_failed_logins_are_counted_once_for_every_node(cluster):
    """Wrong passwords for one name, spread over A and B, use up one allowance (idp.people.loginguard keeps the counts in
    core.ratelimit buckets in the database); past it every node stops the attempt before the password is checked (a
    proof-of-work challenge is needed), even with the right password. From 127.0.0.3: another client than the tests'."""
    from idp.settings import IdPSettings

    if getattr(IdPSettings(), "login_free_failures", None) is None:
        pytest.skip("no shared login guard in this tree")
    from tests.conftest import TEST_LIMITS

    # What the nodes run with: the test harness raises the free failures for every server it starts.
    free = int(cluster.env.get("HALLMARK_LOGIN_FREE_FAILURES", TEST_LIMITS["HALLMARK_LOGIN_FREE_FAILURES"]))
    account_id, username = new_account(cluster)
    nodes = [a(cluster), b(cluster)]

    def failures() -> list[dict]:
        with cluster.sessions() as db:
            rows = db.scalars(
                select(AuditEvent.details)
                .where(AuditEvent.action == "idp.login.failed", AuditEvent.target == account_id)
                .order_by(AuditEvent.seq)
            )
            return [json.loads(row) for row in rows]

    for i in range(free):
        assert _login(nodes[i % 2], username, f"wrong password {i}", source="127.0.0.3").status_code != 303
    counted = failures()
    assert len(counted) == free and counted[-1].get("recent", free) >= free, counted  # one count, whichever node
    for node in (*nodes, cluster.base):
        assert _login(node, username, PASSWORD, source="127.0.0.3").status_code == 401  # challenge_required, not signed in
    assert len(failures()) == free  # stopped before the password was checked


def test_the_nodes_see_the_client_through_the_proxy_and_a_forged_header_nowhere(cluster):
    account_id, username = new_account(cluster)

    def last_actor() -> str:
        with cluster.sessions() as db:
            return db.scalars(
                select(AuditEvent.actor)
                .where(AuditEvent.action == "idp.login.failed", AuditEvent.target == account_id)
                .order_by(AuditEvent.seq.desc())
            ).first()

    # Through nginx, with a forged entry: nginx appends the address it saw (127.0.0.1), the node believes only that.
    through = _login(cluster.base, username, "wrong password", **{"X-Forwarded-For": "198.51.100.23"})
    assert through.status_code < 500 and upstream_of(through)
    assert last_actor() == "ip:127.0.0.1"  # not the proxy's 127.0.0.2, nor the forged address
    # Straight to a node from 127.0.0.1 (not a trusted proxy): the header is not believed.
    direct = _login(b(cluster), username, "wrong password 2", **{"X-Forwarded-For": PROXY_ADDRESS + ", 198.51.100.24"})
    assert direct.status_code < 500
    assert last_actor() == "ip:127.0.0.1"


def test_licence_events_changed_through_both_nodes_reach_the_subscriber_once_each(cluster):
    """Issued through A, suspended through B, resumed through A, revoked through B: each change is one SET at the
    subscriber, although the node that made it tries it at once and both nodes run the outbox job every second."""
    from licenses import demo, events
    from tests.licenses.conftest import person_code
    from tests.licenses.test_events import Subscriber, verified

    actor = "test:multinode"
    services = cluster.services_in_process()
    subscriber = Subscriber()
    try:
        demo.prepare_catalogue(services["licenses"], actor=actor)
        added = cluster.add_client("--name", "多节点审批系统", "--grant", "client_credentials", "--scope", "licences:issue")
        client = added["client_id"], added["client_secret"]
        allow_driving_licences(services, client[0], actor=actor)
        with core_db.transaction(cluster.sessions) as db:
            events.subscribe(
                db,
                client_id=client[0],
                endpoint=subscriber.url("/events"),
                type_codes=[demo.DRIVING_LICENCE],
                accessed=False,
                actor=actor,
                allowed_hosts=frozenset({"127.0.0.1"}),
            )
    finally:
        services.close()
    try:
        order = driving_licence_order(person_code(7_000_000 + uuid.uuid4().int % 100_000), "钱多多", "multinode-")
        token = _token(a(cluster), client, "licences:issue")
        issued = requests.post(a(cluster) + "/api/licences/issue", json=order, headers={"Authorization": f"Bearer {token}"}, timeout=60)
        assert issued.status_code == 201, issued.text
        identifier = issued.json()["licence"]["identifier"]
        for node, action in ((b(cluster), "suspend"), (a(cluster), "resume"), (b(cluster), "revoke")):
            changed = requests.post(
                f"{node}/api/licences/{identifier}/{action}",
                json={"reason": "多节点测试"},
                headers={"Authorization": f"Bearer {token}"},
                timeout=60,
            )
            assert changed.status_code == 200, changed.text
        wait_until(lambda: len(subscriber.tokens("/events")) >= 4, timeout=30, message="four SETs")
        time.sleep(4)  # several rounds of both nodes' outbox jobs: time to send one twice
        jwks = requests.get(b(cluster) + "/api/licences/jwks", timeout=10).json()
        seen = [verified(t, jwks, audience=client[0], base=cluster.base) for t in subscriber.tokens("/events")]
        assert [name for name, _, _ in seen] == ["issued", "suspended", "resumed", "revoked"]
        assert len({claims["jti"] for _, _, claims in seen}) == 4
        with cluster.sessions() as db:
            rows = list(db.scalars(select(OutboxMessage).where(OutboxMessage.target == subscriber.url("/events"))))
        assert [(m.state, m.attempts) for m in rows] == [("delivered", 1)] * 4
    finally:
        subscriber.close()
