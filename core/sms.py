"""Text messages (短信) to residents' phones: one way to send, a real gateway adapter, and an inbox for development.

A package that must text someone calls :func:`send` in the transaction of the change
that calls for it; the text goes through core's outbox (kind :data:`KIND`), so it is
sent at least once after the change commits, and never for a change that rolled back.
Where it goes is the operator's choice, made by the settings:

- :class:`HttpGateway` (``sms_gateway_url`` set): the province's SMS platform.
  ``POST`` JSON ``{"phone", "template", "sign_name", "params"}``, signed with
  HMAC-SHA256 over ``timestamp + "\\n" + body`` under ``sms_gateway_secret``
  (headers ``X-Hallmark-Key``, ``X-Hallmark-Timestamp``, ``X-Hallmark-Signature``).
  Platforms send only pre-approved templates, so each purpose maps to a template id
  (``sms_templates``: ``purpose=id`` pairs). 2xx: sent; 4xx: refused for good (the
  message goes dead, the reason kept); anything else is retried by the outbox.
- :class:`EmbeddedInbox` (no URL: development and the demo): nothing leaves the
  machine; the text is kept in ``core_sms_inbox`` and shown at ``/dev/sms`` to
  browsers on this machine only (it shows codes that open accounts).

The wording of each purpose is here (:data:`TEXTS`), in Chinese as sent in China.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import time
import unicodedata
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from core import db as core_db
from core import http as core_http
from core import outbox
from core.db import utc_now
from core.models import SmsInboxMessage

log = logging.getLogger("hallmark.sms")

KIND = "core.sms"
CONTENT_TYPE = "application/json"
RETRY = outbox.Retry(first=timedelta(seconds=5), cap=timedelta(minutes=2), attempts=5)  # a code is useless after 5 min
INBOX_KEEP = 200  # messages the development inbox keeps
MOBILE = re.compile(r"1[3-9]\d{9}")

# What each purpose says; {code} and {minutes} are filled in. The gateway has its own approved copy of each.
TEXTS = {
    "register": "您正在注册账号，验证码{code}，{minutes}分钟内有效。如非本人操作，请忽略本短信。",
    "login": "您正在登录，验证码{code}，{minutes}分钟内有效。验证码切勿告诉他人。",
    "second_factor": "您正在进行身份验证，验证码{code}，{minutes}分钟内有效。验证码切勿告诉他人。",
    "change_phone": "您正在更换绑定手机号，验证码{code}，{minutes}分钟内有效。如非本人操作，请忽略本短信。",
    "recover": "您正在找回密码，验证码{code}，{minutes}分钟内有效。如非本人操作，您的账号可能存在风险，请勿告诉他人。",
    "password_reset": "您的账号密码已于{time}重置，所有登录已退出。如非本人操作，请立即联系服务热线。",
    "login_alert": "您的账号自{time}起出现{count}次错误密码登录尝试，账号未被锁定。如非本人操作，请留意账号安全。",
    "phone_changed": "您的账号绑定手机号已于{time}更换为{phone}，本号码不再用于登录和找回密码。如非本人操作，请立即联系服务热线。",
}


class BadPhone(ValueError):
    """Not a mainland mobile number (11 digits starting 13-19, optionally written +86 / 86 with spaces or dashes)."""


def normalise_phone(text: str) -> str:
    """The 11-digit mobile number in ``text`` (full-width digits, spaces, dashes and a +86 prefix allowed)."""
    digits = re.sub(r"[\s\-()]", "", unicodedata.normalize("NFKC", text or ""))
    if digits.startswith("+86"):
        digits = digits[3:]
    elif digits.startswith("86") and len(digits) == 13:
        digits = digits[2:]
    if not MOBILE.fullmatch(digits):
        raise BadPhone("not a mainland mobile number")
    return digits


def mask_phone(phone: str) -> str:
    """138****5678: what pages, logs and the outbox's target show."""
    return phone[:3] + "****" + phone[-4:] if len(phone) == 11 else "****"


def render(purpose: str, params: dict[str, str]) -> str:
    return TEXTS[purpose].format(**params)


def send(db: Session, *, phone: str, purpose: str, params: dict[str, str]) -> None:
    """Queue a text to ``phone`` in ``db``'s transaction (sent after it commits, at least once)."""
    if purpose not in TEXTS:
        raise ValueError(f"no text for purpose {purpose!r}")
    phone = normalise_phone(phone)
    render(purpose, params)  # a missing parameter fails here, in the caller's transaction, not in a worker later
    body = json.dumps({"phone": phone, "purpose": purpose, "params": params}, ensure_ascii=False, sort_keys=True).encode()
    outbox.enqueue(db, kind=KIND, target=mask_phone(phone), body=body, content_type=CONTENT_TYPE)


# -- where texts go ------------------------------------------------------------------------------


class EmbeddedInbox:
    """Development and demo: keeps each text in ``core_sms_inbox`` (the newest :data:`INBOX_KEEP`) instead of sending it."""

    name = "embedded"

    def __init__(self, sessions: sessionmaker, sign_name: str = ""):
        self.sessions = sessions
        self.sign_name = sign_name  # shown in front of each text, as the platform would put it

    def __call__(self, message: outbox.Message) -> None:
        order = json.loads(message.body)
        with core_db.transaction(self.sessions) as db:
            db.add(
                SmsInboxMessage(
                    phone=order["phone"], purpose=order["purpose"], text=render(order["purpose"], order["params"]), created_at=utc_now()
                )
            )
            db.flush()
            newest = db.scalars(select(SmsInboxMessage.id).order_by(SmsInboxMessage.id.desc()).offset(INBOX_KEEP).limit(1)).first()
            if newest is not None:
                db.execute(delete(SmsInboxMessage).where(SmsInboxMessage.id <= newest))


def inbox(db: Session, *, limit: int = 50) -> list[SmsInboxMessage]:
    return list(db.scalars(select(SmsInboxMessage).order_by(SmsInboxMessage.id.desc()).limit(limit)))


@dataclass
class HttpGateway:
    """The SMS platform's HTTP API (see the module's text for the request it gets)."""

    url: str
    key: str
    secret: str = field(repr=False)
    sign_name: str
    templates: dict[str, str]
    timeout: float = 5.0
    name = "http"

    def __post_init__(self):
        core_http.require_https(self.url, "sms_gateway_url")
        self._http = core_http.session(timeout=self.timeout, retry_statuses=())

    def __call__(self, message: outbox.Message) -> None:
        import requests

        order = json.loads(message.body)
        template = self.templates.get(order["purpose"])
        if template is None:
            raise outbox.Permanent(f"no gateway template for purpose {order['purpose']!r} (setting sms_templates)")
        body = json.dumps(
            {"phone": order["phone"], "template": template, "sign_name": self.sign_name, "params": order["params"]},
            ensure_ascii=False,
            sort_keys=True,
        ).encode()
        stamp = str(int(time.time()))
        signature = hmac.new(self.secret.encode(), stamp.encode() + b"\n" + body, hashlib.sha256).hexdigest()
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "X-Hallmark-Key": self.key,
            "X-Hallmark-Timestamp": stamp,
            "X-Hallmark-Signature": signature,
        }
        try:
            response = self._http.post(self.url, data=body, headers=headers)
        except requests.RequestException as exc:
            raise outbox.Failed(f"{type(exc).__name__}: the SMS gateway could not be reached") from None
        if 200 <= response.status_code < 300:
            return
        reason = f"HTTP {response.status_code}: {response.text[:200]}"
        if 400 <= response.status_code < 500 and response.status_code != 429:
            raise outbox.Permanent(f"the SMS gateway refused the message ({reason})")
        raise outbox.Failed(reason)


def parse_templates(text: str) -> dict[str, str]:
    """``sms_templates`` (``purpose=template_id`` pairs, space-separated) as a dict; unknown purposes refused."""
    templates = {}
    for pair in text.split():
        purpose, _, template = pair.partition("=")
        if purpose not in TEXTS or not template:
            raise ValueError(f"sms_templates: {pair!r} is not purpose=template_id for a purpose of {', '.join(TEXTS)}")
        templates[purpose] = template
    return templates


@dataclass(frozen=True)
class SmsSettings:
    """Where texts go (``core``'s settings): the gateway, or (no URL) the development inbox."""

    sms_gateway_url: str = ""
    sms_gateway_key: str = ""
    sms_gateway_secret: str = field(default="", repr=False)
    sms_sign_name: str = "政务服务"
    sms_templates: str = ""

    def __post_init__(self):
        from core.settings import ConfigError

        if self.sms_gateway_url:
            try:
                core_http.require_https(self.sms_gateway_url, "sms_gateway_url")
                parse_templates(self.sms_templates)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
            if not self.sms_gateway_key or not self.sms_gateway_secret:
                raise ConfigError("sms_gateway_url needs sms_gateway_key and sms_gateway_secret")


def sender_for(sessions: sessionmaker, settings: SmsSettings):
    if not settings.sms_gateway_url:
        log.info("no sms_gateway_url: text messages are not sent but kept in the development inbox (/dev/sms)")
        return EmbeddedInbox(sessions, settings.sms_sign_name)
    return HttpGateway(
        settings.sms_gateway_url,
        settings.sms_gateway_key,
        settings.sms_gateway_secret,
        settings.sms_sign_name,
        parse_templates(settings.sms_templates),
    )


def install(sessions: sessionmaker, settings: SmsSettings) -> None:
    """Register the sender of :data:`KIND` on ``sessions`` (core's component does, at start-up)."""
    outbox.register(sessions, KIND, sender_for(sessions, settings), retry=RETRY, soon=True)
