"""A login that cannot be turned against its owner: proof of work instead of a lockout.

Wrong passwords no longer lock an account (anyone who knows a mobile number could
keep its owner out). Instead every wrong password is remembered for a while
(``login_failure_minutes``), per name as typed and per client address, in
``core.ratelimit`` buckets (the database: every worker and node sees the same
count). Past ``login_free_failures`` of either, each further attempt must carry a
solved proof-of-work challenge in the ALTCHA format, self-hosted:

* the server issues ``{"algorithm": "SHA-256", "challenge", "maxnumber", "salt",
  "signature"}``: ``salt`` is random and carries its expiry, the difficulty and a
  not-before time (``?expires=..&max=..&nb=..``), ``challenge`` is
  SHA-256(salt + n) for a secret n in [0, maxnumber], ``signature`` an HMAC-SHA256
  of ``challenge`` under a key derived from the instance secret;
* the login page's script (``idp/static/loginguard.js``) finds n by trying 0, 1, 2, ...
  and sends base64(JSON ``{algorithm, challenge, number, salt, signature}``);
* the server checks the signature, that SHA-256(salt + number) is the challenge,
  the expiry, the not-before time, that the difficulty is what the attempt needs
  now, and spends the challenge (``idp_pow_spent``, single use on every node).

The difficulty doubles with each failure past the free ones
(``login_pow_base`` × 2^k, at most ``login_pow_max``), and the not-before time
grows the same way (1 s, 2 s, 4 s ... at most ``login_delay_max_seconds``): the
server never sleeps, it refuses a solution sent too early. So guessing gets
exponentially dearer while the owner, whatever others did, signs in with the right
password and one solved challenge (a few seconds of a phone's work at the cap).

A name with an account and a name without one are counted and challenged alike
(the key is a keyed hash of the name as typed), so the form still does not tell
whether an account exists. After ``login_notice_after`` wrong passwords for an
account its owner is told, at most once an hour: an audit event, and a text to
the confirmed mobile number.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import secrets
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl

from sqlalchemy import delete, insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core import audit, ratelimit, sms
from core.db import utc_now
from idp.context import IdPContext
from idp.models import Account, PowSpent

ALGORITHM = "SHA-256"
LIFETIME = timedelta(minutes=10)  # time to type a password and send the form with the solution
NOTICE_INTERVAL = 3600  # the owner is told at most once an hour
MAX_PAYLOAD = 2048


def _settings(ctx: IdPContext):
    return ctx.settings


def _bucket(ctx: IdPContext, which: str) -> ratelimit.SharedBucket:
    """Failures of one kind as a decaying count: each adds ``login_failure_minutes``, capacity one."""
    seconds = max(1.0, float(_settings(ctx).login_failure_minutes) * 60)
    return ratelimit.shared(ctx.cache, ctx.sessions, f"idp.login.failures.{which}", (1, 1 / seconds))


def _notice_bucket(ctx: IdPContext) -> ratelimit.SharedBucket:
    return ratelimit.shared(ctx.cache, ctx.sessions, "idp.login.owner_notice", (1, 1 / NOTICE_INTERVAL))


def _outstanding(bucket: ratelimit.SharedBucket, key: str, db: Session | None) -> int:
    """How many failures are still remembered for ``key`` (the bucket's wait, in failures)."""
    return math.ceil(bucket.wait_time(key, db=db) * bucket.rate - 1e-9)


def failures(ctx: IdPContext, *, name: str, ip: str, db: Session | None = None) -> tuple[int, int]:
    """Failures remembered now for the name (a keyed hash) and for the client address."""
    return _outstanding(_bucket(ctx, "name"), name, db), _outstanding(_bucket(ctx, "source"), ip, db)


def difficulty(ctx: IdPContext, count: int) -> tuple[int, int]:
    """(maxnumber, not-before delay in seconds) after ``count`` failures; (0, 0) when no challenge is needed."""
    own = _settings(ctx)
    extra = count - own.login_free_failures
    if extra < 0:
        return 0, 0
    maxnumber = min(own.login_pow_max, own.login_pow_base * (2 ** min(extra, 40)))
    delay = min(own.login_delay_max_seconds, 2 ** min(extra, 20) - 1)
    return maxnumber, delay


def needed(ctx: IdPContext, *, name: str, ip: str, db: Session | None = None) -> tuple[int, int]:
    """What the next attempt of this name from this address must carry (see :func:`difficulty`)."""
    return difficulty(ctx, max(failures(ctx, name=name, ip=ip, db=db)))


def _key(ctx: IdPContext) -> bytes:
    return hmac.new(ctx.secret_key, b"idp-login-pow", hashlib.sha256).digest()


def issue(ctx: IdPContext, maxnumber: int, delay: int = 0, *, now: float | None = None) -> dict:
    """A signed challenge of this difficulty (ALTCHA's JSON)."""
    now = time.time() if now is None else now
    salt = f"{secrets.token_hex(12)}?expires={int(now + LIFETIME.total_seconds())}&max={maxnumber}&nb={int(now + delay)}&"
    number = secrets.randbelow(maxnumber + 1)
    challenge = hashlib.sha256(f"{salt}{number}".encode()).hexdigest()
    signature = hmac.new(_key(ctx), challenge.encode(), hashlib.sha256).hexdigest()
    return {"algorithm": ALGORITHM, "challenge": challenge, "maxnumber": maxnumber, "salt": salt, "signature": signature, "delay": delay}


def solve(challenge: dict) -> str:
    """The payload the page's script sends (for tests and tools; the page does this in JavaScript)."""
    for number in range(challenge["maxnumber"] + 1):
        if hashlib.sha256(f"{challenge['salt']}{number}".encode()).hexdigest() == challenge["challenge"]:
            solved = {k: challenge[k] for k in ("algorithm", "challenge", "salt", "signature")} | {"number": number}
            return base64.b64encode(json.dumps(solved).encode()).decode()
    raise ValueError("no solution in range")


def spend(ctx: IdPContext, db: Session, payload: str, *, maxnumber: int, now: float | None = None) -> str:
    """Check and spend a solved challenge in ``db``'s transaction; "" if it counts, else why not (for the audit)."""
    now = time.time() if now is None else now
    if not isinstance(payload, str) or not payload or len(payload) > MAX_PAYLOAD:
        return "missing"
    try:
        solved = json.loads(base64.b64decode(payload, validate=True))
        algorithm, challenge, salt = solved["algorithm"], solved["challenge"], solved["salt"]
        signature, number = solved["signature"], solved["number"]
        if not all(isinstance(v, str) for v in (algorithm, challenge, salt, signature)) or type(number) is not int:
            return "malformed"
        params = dict(parse_qsl(salt.partition("?")[2]))
        expires, made_for, not_before = int(params["expires"]), int(params["max"]), int(params["nb"])
    except (ValueError, KeyError, TypeError):
        return "malformed"
    expected = hmac.new(_key(ctx), challenge.encode(), hashlib.sha256).hexdigest()
    if algorithm != ALGORITHM or not hmac.compare_digest(expected, signature):
        return "signature"
    if not 0 <= number <= made_for or hashlib.sha256(f"{salt}{number}".encode()).hexdigest() != challenge:
        return "wrong"
    if expires < now:
        return "expired"
    if not_before > now:
        return "early"
    # The difficulty may have doubled since the page asked (others kept failing): one step of slack.
    if made_for < maxnumber // 2:
        return "too_easy"
    spent_id = hashlib.sha256(salt.encode()).hexdigest()
    try:
        with db.begin_nested():
            db.execute(insert(PowSpent).values(id=spent_id, expires_at=datetime.fromtimestamp(expires, UTC)))
    except IntegrityError:
        return "replayed"
    if secrets.randbelow(50) == 0:
        db.execute(delete(PowSpent).where(PowSpent.expires_at < utc_now() - timedelta(minutes=1)))
    return ""


def failed(ctx: IdPContext, db: Session, *, name: str, ip: str, account: Account | None) -> int:
    """Count a wrong password for the name and the address (in ``db``); tell the owner when it is time. Returns the name's count."""
    _bucket(ctx, "source").take(ip, db=db)
    bucket = _bucket(ctx, "name")
    bucket.take(name, db=db)
    count = _outstanding(bucket, name, db)
    if account is not None and count >= _settings(ctx).login_notice_after and _notice_bucket(ctx).attempt(account.id, db=db) == 0:
        audit.record(
            db,
            actor="system:login-guard",
            action="idp.login.owner_notified",
            target=account.id,
            details={"failures": count, "by": "sms" if account.mobile and account.phone_confirmed_at else "audit"},
        )
        if account.mobile and account.phone_confirmed_at:
            stamp = datetime.now(UTC).astimezone(_zone()).strftime("%Y-%m-%d %H:%M")
            sms.send(db, phone=account.mobile, purpose="login_alert", params={"time": stamp, "count": str(count)})
    return count


def succeeded(ctx: IdPContext, *, name: str) -> None:
    """The right password: the name's count starts again (the address's does not: it may be shared with a guesser)."""
    _bucket(ctx, "name").reset(name)


def _zone():
    from zoneinfo import ZoneInfo

    return ZoneInfo("Asia/Shanghai")
