"""Licence status events end to end: a subscriber test server (HTTP on 127.0.0.1, a thread) receives a Security Event
Token (RFC 8417) pushed (RFC 8935) for each lifecycle change and checks it with cryptography alone against the JWKS
the server publishes; events sent while it was down arrive once it is back; a 400 answer makes the SET dead, listed
by ``hallmark outbox list --dead`` and sent again after ``hallmark outbox retry``; a subscriber that hangs does not
hold up issuing; subscriptions through the CLI and through the API (a client's own only).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from sqlalchemy import select

from core import db as core_db
from core import outbox
from core import problems as core_problems
from core.db import utc_now
from core.models import OutboxMessage
from licenses import accesslog, demo, events, issuance, lifecycle
from licenses.models import Licence
from tests.conftest import run_hallmark
from tests.licenses.conftest import ACTOR
from tests.licenses.test_api import Api
from tests.licenses.test_grants_and_log import independently_verified

pytestmark = pytest.mark.slow
FOOD = demo.FOOD_PERMIT


class Subscriber:
    """An RFC 8935 push endpoint: records each POST (path, content type, body); ``answers[path]`` lists
    (status, JSON body) to give first, then 202. ``hold[path]``: an Event the handler waits on before answering."""

    def __init__(self, port: int = 0):
        self.received: list[tuple[str, str, bytes]] = []
        self.answers: dict[str, list[tuple[int, dict | None]]] = {}
        self.hold: dict[str, threading.Event] = {}
        self.entered = threading.Event()
        self._lock = threading.Lock()
        subscriber = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                gate = subscriber.hold.get(self.path)
                if gate is not None:
                    subscriber.entered.set()
                    gate.wait(30)
                with subscriber._lock:
                    subscriber.received.append((self.path, self.headers.get("Content-Type", ""), body))
                    queue = subscriber.answers.get(self.path) or []
                    status, answer = queue.pop(0) if queue else (202, None)
                payload = json.dumps(answer).encode() if answer is not None else b""
                self.send_response(status)
                if payload:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def tokens(self, path: str) -> list[str]:
        with self._lock:
            return [body.decode() for p, _, body in self.received if p == path]

    def content_types(self) -> set[str]:
        with self._lock:
            return {content_type for _, content_type, _ in self.received}

    def close(self):
        for gate in self.hold.values():
            gate.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def subscriber():
    s = Subscriber()
    yield s
    s.close()


@pytest.fixture
def subscribe(licence_world):
    """Add subscriptions for the test; they end with it (the licence world is shared with other modules)."""
    made: list[int] = []

    def add(client_id: str, endpoint: str, types=(), accessed=False, allowed_hosts=None) -> int:
        with core_db.transaction(licence_world.ctx.sessions) as db:
            row = events.subscribe(
                db,
                client_id=client_id,
                endpoint=endpoint,
                type_codes=list(types),
                accessed=accessed,
                actor=ACTOR,
                allowed_hosts=events.endpoint_hosts(licence_world.ctx) if allowed_hosts is None else allowed_hosts,
            )
            made.append(row.id)
            return row.id

    yield add
    with core_db.transaction(licence_world.ctx.sessions) as db:
        for subscription_id in made:
            try:
                events.unsubscribe(db, subscription_id, actor=ACTOR)
            except Exception:  # already ended by the test
                pass


def wait_until(condition, what: str, world=None, now=None, timeout: float = 30):
    """Poll ``condition``; with ``world``, also run a delivery pass each time (at ``now()``, if given)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if world is not None:
            outbox.deliver_due(world.ctx.sessions, worker_id="test", now=now() if now else None)
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def messages_to(world, endpoint: str) -> list[OutboxMessage]:
    with world.ctx.sessions() as db:
        return list(db.scalars(select(OutboxMessage).where(OutboxMessage.target == endpoint).order_by(OutboxMessage.id)))


def verified(token: str, jwks: dict, *, audience: str, base: str) -> tuple[str, dict, dict]:
    """(event name, event payload, claims) of a SET, checked as a subscriber must: with a JOSE library (joserfc; the
    server signs with its own code through the HSM, core.jws) and with cryptography alone."""
    from joserfc import jws
    from joserfc.jwk import KeySet

    by_library = jws.deserialize_compact(token, KeySet.import_key_set(jwks), algorithms=["ES256"])
    header, claims = independently_verified(token, jwks)
    assert json.loads(by_library.payload) == claims and by_library.protected["typ"] == header["typ"]
    assert header["typ"] == "secevent+jwt"
    assert claims["iss"] == base and claims["aud"] == audience
    assert isinstance(claims["iat"], int) and claims["jti"] and claims["txn"] and "exp" not in claims
    ((uri, payload),) = claims["events"].items()
    prefix = base + "/secevent/licence/"
    assert uri.startswith(prefix)
    return uri.removeprefix(prefix), payload, claims


def change(world, identifier: str, action: str, reason: str | None = "测试"):
    with core_db.transaction(world.ctx.sessions) as db:
        return lifecycle.change_state(db, identifier, action, reason=reason, actor="officer:events")


def test_every_lifecycle_change_reaches_the_subscribers_as_a_verified_set(licence_world, subscriber, subscribe):
    world = licence_world
    jwks = requests.get(world.serve() + "/api/licences/jwks", timeout=10).json()
    by_type, other_type, watcher = (f"sub-{name}-{uuid.uuid4().hex[:6]}" for name in ("type", "other", "watch"))
    subscribe(by_type, subscriber.url("/type"), types=[FOOD])
    subscribe(other_type, subscriber.url("/other"), types=[demo.TEACHER_QUALIFICATION])
    subscribe(watcher, subscriber.url("/watch"), accessed=True)

    first = world.issue(FOOD, holder_name="示范市事件测试餐饮店")
    with core_db.transaction(world.ctx.sessions) as db:  # the watcher reads the first licence
        accesslog.append(
            db,
            client_id=watcher,
            holder_hash=first.holder_hash,
            identifier=first.identifier,
            type_code=FOOD,
            route="grant",
            mode="compare",
            purpose="核验",
            matter="M-1",
            result="match",
        )
    change(world, first.identifier, "suspend")
    change(world, first.identifier, "resume", reason=None)
    renewed = issuance.next_version(world.ctx, first.identifier, action="renew", actor="officer:events", reason=None)
    changed = issuance.next_version(
        world.ctx,
        renewed.identifier,
        action="change",
        actor="officer:events",
        reason="经营场所变更",
        face_changes={"premises": "示范市福新路9号"},
    )
    change(world, changed.identifier, "revoke")
    withdrawn, cancelled, expiring = (world.issue(FOOD) for _ in range(3))
    change(world, withdrawn.identifier, "withdraw")
    change(world, cancelled.identifier, "cancel")
    with core_db.transaction(world.ctx.sessions) as db:  # what the expiry job does to a licence past its end date
        row = db.get(Licence, expiring.identifier)
        lifecycle.record_change(db, row, lifecycle.EXPIRED, reason="有效期届满", actor="system:licences", action="expire")

    expected = [
        ("issued", first.identifier, "valid", None),
        ("suspended", first.identifier, "suspended", "valid"),
        ("resumed", first.identifier, "valid", "suspended"),
        ("superseded", first.identifier, "superseded", "valid"),
        ("renewed", renewed.identifier, "valid", None),
        ("superseded", renewed.identifier, "superseded", "valid"),
        ("changed", changed.identifier, "valid", None),
        ("revoked", changed.identifier, "revoked", "valid"),
        ("issued", withdrawn.identifier, "valid", None),
        ("withdrawn", withdrawn.identifier, "withdrawn", "valid"),
        ("issued", cancelled.identifier, "valid", None),
        ("cancelled", cancelled.identifier, "cancelled", "valid"),
        ("issued", expiring.identifier, "valid", None),
        ("expired", expiring.identifier, "expired", "valid"),
    ]
    wait_until(lambda: len(subscriber.tokens("/type")) >= len(expected), "the type subscriber's SETs", world)
    # The watcher hears of the licence it read and of the version that directly replaced it, nothing else.
    wait_until(lambda: len(subscriber.tokens("/watch")) >= 5, "the watcher's SETs", world)

    seen, jtis, txns = [], set(), {}
    for token in subscriber.tokens("/type"):
        name, payload, claims = verified(token, jwks, audience=by_type, base=world.base)
        seen.append((name, payload["identifier"], payload["state"], payload["previous_state"]))
        assert payload["type"] == FOOD and payload["issuer"] == demo.issuer_for(FOOD).code
        if name == "superseded":
            assert (
                payload["successor"]
                == {first.identifier: renewed.identifier, renewed.identifier: changed.identifier}[payload["identifier"]]
            )
        if name in ("renewed", "changed"):
            assert (
                payload["predecessor"]
                == {renewed.identifier: first.identifier, changed.identifier: renewed.identifier}[payload["identifier"]]
            )
        jtis.add(claims["jti"])
        txns.setdefault(claims["txn"], []).append(name)
    assert sorted(seen, key=repr) == sorted(expected, key=repr)
    assert len(jtis) == len(expected)  # one SET per change, none twice
    # A renewal's two events (old superseded, new renewed) are one transaction; other changes each have their own.
    assert sorted(sorted(names) for names in txns.values() if len(names) > 1) == [["changed", "superseded"], ["renewed", "superseded"]]

    watched = sorted(
        (name, payload["identifier"])
        for name, payload, _ in (verified(t, jwks, audience=watcher, base=world.base) for t in subscriber.tokens("/watch"))
    )
    assert watched == sorted(
        [
            ("suspended", first.identifier),
            ("resumed", first.identifier),
            ("superseded", first.identifier),
            ("renewed", renewed.identifier),
            ("superseded", renewed.identifier),
        ]
    )
    assert subscriber.tokens("/other") == []
    assert subscriber.content_types() == {"application/secevent+jwt"}
    for message in messages_to(world, subscriber.url("/type")):
        assert message.state == "delivered" and message.dedupe_key == f"set:{json.loads(_payload(message.body))['jti']}"


def _payload(token: bytes) -> bytes:
    import base64

    part = token.split(b".")[1]
    return base64.urlsafe_b64decode(part + b"=" * (-len(part) % 4))


def test_events_sent_while_the_subscriber_was_down_arrive_once_it_is_back(licence_world, subscribe):
    world = licence_world
    down = Subscriber()
    port = down.port
    down.close()  # nothing listens there now
    client = f"sub-down-{uuid.uuid4().hex[:6]}"
    endpoint = f"http://127.0.0.1:{port}/events"
    subscribe(client, endpoint, types=[FOOD])
    licence = world.issue(FOOD)
    change(world, licence.identifier, "suspend")  # issuing and changing go on while the subscriber is down
    wait_until(lambda: all(m.attempts >= 1 for m in messages_to(world, endpoint)), "the first (failed) attempts", world)
    waiting = messages_to(world, endpoint)
    assert len(waiting) == 2 and {m.state for m in waiting} == {"pending"} and all(m.last_error for m in waiting)

    back = Subscriber(port)
    try:
        later = utc_now() + timedelta(hours=2)  # past any retry delay
        wait_until(lambda: len(back.tokens("/events")) >= 2, "the SETs after the subscriber came back", world, now=lambda: later)
        wait_until(lambda: {m.state for m in messages_to(world, endpoint)} == {"delivered"}, "both delivered", world, now=lambda: later)
        claims = [json.loads(_payload(t.encode())) for t in back.tokens("/events")]
        assert len({c["jti"] for c in claims}) == 2 == len(claims)
        assert sorted(next(iter(c["events"])).rsplit("/", 1)[1] for c in claims) == ["issued", "suspended"]
    finally:
        back.close()


def test_a_subscriber_that_hangs_does_not_hold_up_issuing(licence_world, subscriber, subscribe):
    world = licence_world
    gate = subscriber.hold["/slow"] = threading.Event()
    client = f"sub-slow-{uuid.uuid4().hex[:6]}"
    subscribe(client, subscriber.url("/slow"), types=[FOOD])
    first = world.issue(FOOD)
    assert subscriber.entered.wait(15)  # its SET is being sent, and the subscriber does not answer
    second = world.issue(FOOD)  # issuing goes on meanwhile: the SET is only queued in its transaction
    change(world, first.identifier, "suspend")
    assert not gate.is_set()
    queued = messages_to(world, subscriber.url("/slow"))
    assert len(queued) == 3 and {m.state for m in queued} == {"pending"}
    with world.ctx.sessions() as db:
        assert db.get(Licence, second.identifier).state == "valid" and db.get(Licence, first.identifier).state == "suspended"
    gate.set()
    wait_until(lambda: {m.state for m in messages_to(world, subscriber.url("/slow"))} == {"delivered"}, "the SETs delivered", world)


def test_a_refused_set_is_dead_listed_for_staff_and_sent_again_on_retry(licence_world, subscriber, subscribe):
    world = licence_world
    subscriber.answers["/refuse"] = [(400, {"err": "invalid_audience", "description": "not for us"})]
    client = f"sub-refuse-{uuid.uuid4().hex[:6]}"
    subscribe(client, subscriber.url("/refuse"), types=[FOOD])
    world.issue(FOOD)
    wait_until(lambda: [m.state for m in messages_to(world, subscriber.url("/refuse"))] == ["dead"], "the refused SET dead", world)
    (dead,) = messages_to(world, subscriber.url("/refuse"))
    assert dead.attempts == 1 and "invalid_audience: not for us" in dead.last_error
    # Not retried on its own, however long one waits.
    assert outbox.deliver_due(world.ctx.sessions, worker_id="test", now=utc_now() + timedelta(days=2)).claimed == 0

    listed = run_hallmark(world.instance, "outbox", "list", "--dead", "--kind", events.KIND)
    assert listed.returncode == 0, listed.stderr
    line = next(line for line in listed.stdout.splitlines() if line.startswith(f"{dead.id} "))
    assert "dead" in line and subscriber.url("/refuse") in line and "invalid_audience" in listed.stdout
    retried = run_hallmark(world.instance, "outbox", "retry", str(dead.id))
    assert retried.returncode == 0 and f"message {dead.id}" in retried.stdout, retried.stderr
    wait_until(lambda: [m.state for m in messages_to(world, subscriber.url("/refuse"))] == ["delivered"], "the resent SET", world)
    first, second = subscriber.tokens("/refuse")
    assert first == second  # the same SET (same jti) again: the subscriber can tell it is a resend
    assert run_hallmark(world.instance, "outbox", "retry", str(dead.id)).returncode == 1  # delivered: nothing to retry
    assert run_hallmark(world.instance, "outbox", "retry", "999999999").returncode == 1


def test_subscriptions_from_the_command_line(licence_world, subscriber):
    world = licence_world
    client = f"sub-cli-{uuid.uuid4().hex[:6]}"
    made = run_hallmark(world.instance, "licences", "subscribe", client, "--endpoint", subscriber.url("/cli"), "--type", FOOD)
    assert made.returncode == 0, made.stderr
    subscription_id = made.stdout.split()[1].rstrip(":")
    listed = run_hallmark(world.instance, "licences", "subscriptions", "--client", client)
    assert subscription_id in listed.stdout and FOOD in listed.stdout and subscriber.url("/cli") in listed.stdout
    bad = run_hallmark(world.instance, "licences", "subscribe", client, "--endpoint", "ftp://x.test/", "--type", FOOD)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr and "endpoint" in bad.stderr
    unknown = run_hallmark(world.instance, "licences", "subscribe", client, "--endpoint", subscriber.url("/cli"), "--type", "NOPE")
    assert unknown.returncode == 1 and "licence type" in unknown.stderr
    nothing = run_hallmark(world.instance, "licences", "subscribe", client, "--endpoint", subscriber.url("/cli"))
    assert nothing.returncode == 1 and "at least one" in nothing.stderr
    ended = run_hallmark(world.instance, "licences", "unsubscribe", subscription_id)
    assert ended.returncode == 0 and "ended" in ended.stdout
    assert "no subscriptions" in run_hallmark(world.instance, "licences", "subscriptions", "--client", client).stdout
    assert run_hallmark(world.instance, "licences", "unsubscribe", subscription_id).returncode == 1


def test_subscriptions_through_the_api_are_the_clients_own(licence_world, subscriber):
    api = Api(licence_world)
    mine, theirs = api.client(), api.client()
    api.grant(mine[0], FOOD)  # a compare grant does not let a client follow every licence of a type
    token, other = api.token(mine), api.token(theirs)
    path = "/api/licences/subscriptions"
    endpoint = subscriber.url("/api")
    compare_only = api.post(path, token, {"endpoint": endpoint, "types": [FOOD]})
    assert compare_only.status_code == 403 and compare_only.json()["code"] == "no_grant"
    api.grant(mine[0], demo.DRIVING_LICENCE, mode="read")

    assert api.post(path, None, {"endpoint": endpoint, "types": [demo.DRIVING_LICENCE]}).status_code == 401
    made = api.post(path, token, {"endpoint": endpoint, "types": [demo.DRIVING_LICENCE], "accessed": True})
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["types"] == [demo.DRIVING_LICENCE] and body["accessed"] is True and body["client_id"] == mine[0]
    assert made.headers["Location"] == f"{path}/{body['id']}"
    try:
        refused = api.post(path, token, {"endpoint": endpoint, "types": [FOOD]})
        assert refused.status_code == 403 and refused.json()["code"] == "no_grant"
        for bad, code in (
            ({"endpoint": "ftp://x.test/", "types": [demo.DRIVING_LICENCE]}, "bad_endpoint"),
            ({"endpoint": endpoint, "types": demo.DRIVING_LICENCE}, "bad_types"),
            ({"endpoint": endpoint}, "nothing_subscribed"),
            ({"endpoint": endpoint, "accessed": "yes"}, "bad_accessed"),
        ):
            answer = api.post(path, token, bad)
            assert answer.status_code == 422 and answer.json()["code"] == code, answer.text
        assert api.post(path, token, {"endpoint": endpoint, "types": ["NOPE"]}).status_code == 404

        assert [s["id"] for s in api.get(path, token).json()["subscriptions"]] == [body["id"]]
        assert api.get(path, other).json()["subscriptions"] == []
        stranger = requests.delete(f"{api.base}{path}/{body['id']}", headers={"Authorization": f"Bearer {other}"}, timeout=10)
        assert stranger.status_code == 404
    finally:
        gone = requests.delete(f"{api.base}{path}/{body['id']}", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert gone.status_code == 204
    assert api.get(path, token).json()["subscriptions"] == []


# -- where events may go: no request forgery through a subscription (security review M3) ----------------


@pytest.mark.parametrize(
    "endpoint, why",
    [
        ("http://events.example.org/set", "https"),  # plain http outside the allow-list
        ("https://127.0.0.2/set", "127.0.0.2"),  # loopback (only 127.0.0.1 is allow-listed here)
        ("https://localhost/set", "not a public address"),  # a name that resolves to loopback
        ("https://10.1.2.3/set", "10.1.2.3"),  # private networks
        ("https://192.168.0.9:8443/set", "192.168.0.9"),
        ("https://169.254.169.254/latest/meta-data/", "169.254.169.254"),  # cloud metadata
        ("https://[::1]/set", "::1"),
        ("https://[::ffff:127.0.0.1]/set", "127.0.0.1"),  # loopback written as IPv4-mapped IPv6
        ("https://100.64.0.1/set", "100.64.0.1"),  # carrier-grade NAT: not public
    ],
)
def test_an_endpoint_inside_the_network_is_refused(licence_world, endpoint, why):
    with pytest.raises(core_problems.Problem) as refused:
        events.check_endpoint(endpoint, events.endpoint_hosts(licence_world.ctx))
    assert refused.value.status == 422 and refused.value.extensions["code"] == "bad_endpoint"
    assert why in refused.value.detail


def test_an_https_endpoint_on_a_public_address_and_an_allow_listed_host_are_accepted(licence_world):
    allowed = events.endpoint_hosts(licence_world.ctx)
    assert allowed == frozenset({"127.0.0.1"})
    assert events.check_endpoint("https://8.8.8.8/set", frozenset()) == "https://8.8.8.8/set"  # no DNS for a literal
    assert events.check_endpoint(" http://127.0.0.1:9/set ", allowed) == "http://127.0.0.1:9/set"
    assert events.check_endpoint("http://10.1.2.3:8080/set", {"10.1.2.3:8080"}) == "http://10.1.2.3:8080/set"
    with pytest.raises(core_problems.Problem):  # host:port allows that port only
        events.check_endpoint("http://10.1.2.3:8081/set", {"10.1.2.3:8080"})


def test_the_api_refuses_an_endpoint_inside_the_network(licence_world):
    api = Api(licence_world)
    client = api.client()
    api.grant(client[0], demo.DRIVING_LICENCE, mode="read")
    token = api.token(client)
    for endpoint in ("https://169.254.169.254/latest", "http://192.168.1.1/set"):
        answer = api.post("/api/licences/subscriptions", token, {"endpoint": endpoint, "types": [demo.DRIVING_LICENCE]})
        assert answer.status_code == 422 and answer.json()["code"] == "bad_endpoint", answer.text
    assert api.get("/api/licences/subscriptions", token).json()["subscriptions"] == []


def test_a_stored_endpoint_no_longer_allowed_is_not_called(licence_world, subscribe):
    """A subscription made under a wider allow-list (or a name that now resolves inside) is checked again
    before each delivery: its SET goes dead, unsent, instead of reaching into the network."""
    world = licence_world
    endpoint = f"https://10.9.9.9/{uuid.uuid4().hex[:6]}"
    subscribe(f"sub-inside-{uuid.uuid4().hex[:6]}", endpoint, types=[FOOD], allowed_hosts={"10.9.9.9"})
    world.issue(FOOD)
    wait_until(lambda: [m.state for m in messages_to(world, endpoint)] == ["dead"], "the SET refused before sending", world)
    (dead,) = messages_to(world, endpoint)
    assert dead.attempts == 1 and "not sent" in dead.last_error and "not a public address" in dead.last_error
