"""The newcomer's demo that `make run` prepares: two halls registered as clients,
demo matters, and two demo accounts (basic and real-name).

Everything is idempotent. Secrets the demo needs again on the next run (the halls'
client secrets, the demo passwords) are kept in ``demo.json`` in the instance
folder, readable by its owner only; they are demo credentials for 127.0.0.1 and
nothing else.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import select

from ca import issuance
from ca.context import CAContext
from ca.models import Certificate
from core import db as core_db
from core.db import utc_now
from core.identifiers import lookup_hash, mask_resident_id, validate_resident_id
from hallmark import demo_usbkey
from idp import levels
from idp.certlogin.enrolment import chain_of
from idp.context import IdPContext
from idp.models import Account, Client
from idp.oidc import clients
from idp.people import accounts, realname
from licenses.context import LicencesContext

DEMO_FILE = "demo.json"
ACTOR = "system:demo"


@dataclass(frozen=True)
class Hall:
    client_id: str
    name: str
    name_en: str
    port: int

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


HALLS = (
    Hall("city-hall", "市网上办事大厅", "City online service hall", 8001),
    Hall("county-hall", "县网上办事大厅", "County online service hall", 8002),
)
BASIC_USER = "demo-basic"
REALNAME_USER = "demo-realname"
LEGAL_REP_USER = "demo-legalrep"  # represents the demo enterprise (so demo-realname's logins stay one step)


@dataclass(frozen=True)
class DemoInfo:
    halls: dict  # client_id -> {"client_secret", "base", "name", "name_en"}
    accounts: dict  # username -> {"password", "level", ...}
    path: Path
    usb_key: dict | None = None  # {"agent_config", "token", "holder"} of the demo USB key
    seal: dict | None = None  # {"name", "sealed_pdf", "verify_url"} of the demo seal
    licences: dict | None = None  # {"enterprise", "issued": [{"identifier", "type", "holder", "verify_url"}]}
    approval: dict | None = None  # examples/approval: {"matter", "issuer", "officers", "instances": {...}, "payment": {...}}


def _load(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}


def _save(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, ensure_ascii=False, indent=2)
    os.replace(tmp, path)


def _demo_password() -> str:
    # Readable to type from the terminal, long enough for the password policy.
    return "Demo-" + secrets.token_urlsafe(6).replace("-", "x").replace("_", "y") + "-2026"


def halls(ports: tuple[int, ...] | None = None) -> tuple[Hall, ...]:
    """The demo halls, on their usual ports or on ``ports`` (tests run the demo beside other servers)."""
    if not ports:
        return HALLS
    return tuple(Hall(h.client_id, h.name, h.name_en, port) for h, port in zip(HALLS, ports, strict=True))


def prepare(
    ctx: IdPContext,
    instance: Path,
    *,
    ports: tuple[int, ...] | None = None,
    ca: CAContext | None = None,
    licences: LicencesContext | None = None,
    approval_ports: tuple[int, ...] | None = None,
) -> DemoInfo:
    """Make sure the demo halls, matters and accounts exist; return what a newcomer needs to try them.

    With ``ca``, the real-name demo person also gets a demo USB key (a SoftHSM2
    token in the instance) holding a person-auth certificate, for certificate login.
    """
    path = instance / DEMO_FILE
    data = _load(path)
    hall_data = data.setdefault("halls", {})
    people = data.setdefault("accounts", {})
    halls_wanted = halls(ports)

    with core_db.transaction(ctx.sessions) as db:
        for code, name, level, department in levels.DEMO_MATTERS:
            if levels.matter(db, code) is None:
                levels.set_matter(db, code, level=level, name=name, department=department, actor=ACTOR)
        for hall in halls_wanted:
            known = hall_data.get(hall.client_id, {})
            row = db.get(Client, hall.client_id)
            if row is not None and json.loads(row.redirect_uris or "[]") != [hall.base + "/callback"]:
                clients.remove(ctx, db, hall.client_id, actor=ACTOR)  # the hall moved to another port
                db.flush()
                row = None
            if row is None:
                created = clients.add(
                    ctx,
                    db,
                    client_id=hall.client_id,
                    name=hall.name,
                    client_type="confidential",
                    redirect_uris=[hall.base + "/callback"],
                    scopes=["openid", "profile", "hallmark:realname"],
                    first_party=True,
                    backchannel_logout_uri=hall.base + "/backchannel-logout",
                    post_logout_redirect_uris=[hall.base + "/"],
                    actor=ACTOR,
                )
                known = {"client_secret": created.client_secret}
            elif not known.get("client_secret"):  # demo.json lost: the old secret is unknowable, issue a new one
                known = {"client_secret": clients.new_secret(ctx, db, hall.client_id, actor=ACTOR)}
            hall_data[hall.client_id] = {**known, "base": hall.base, "name": hall.name, "name_en": hall.name_en, "port": hall.port}

    people[BASIC_USER] = _account(ctx, BASIC_USER, "演示居民甲", people.get(BASIC_USER, {}))
    people[REALNAME_USER] = _account(ctx, REALNAME_USER, "演示居民乙", people.get(REALNAME_USER, {}))
    people[REALNAME_USER].update(_proof(ctx, REALNAME_USER))
    people[BASIC_USER]["level"], people[REALNAME_USER]["level"] = 1, 2
    people[BASIC_USER].update(_registry_person(ctx, instance, 2))  # so the basic account can step up to real-name
    usb_key = None
    if ca is not None:
        person = realname.demo_people(1)[0]
        made = prepare_demo_usb_key(ca, instance, resident_id=person.resident_id, name=person.name, actor=ACTOR)
        usb_key = {"agent_config": str(made.agent_config), "token": made.token_label, "holder": REALNAME_USER}
        data["usb_key"] = usb_key
        data["seal"] = _seal_sample(ca, instance, data.get("seal") or {})
    if licences is not None:
        people[LEGAL_REP_USER] = _account(ctx, LEGAL_REP_USER, "演示法人丙", people.get(LEGAL_REP_USER, {}))
        people[LEGAL_REP_USER].update(_proof(ctx, LEGAL_REP_USER, 1), level=2)
        data["licences"] = _licences(ctx, licences)
        if ca is not None:
            data["approval"] = _approval(ctx, ca, licences, data.get("approval") or {}, approval_ports or APPROVAL_PORTS)
            data["approval"]["enterprise_key"] = put_enterprise_keys_on_demo_usb_key(ca, instance, actor=ACTOR)
    _save(path, data)
    return DemoInfo(hall_data, people, path, usb_key, data.get("seal"), data.get("licences"), data.get("approval"))


# -- examples/approval: a food business licence approval system, a second instance, a payment service ------------

APPROVAL_MATTER = ("food-business-licence", "食品经营许可", 3, "示范市市场监督管理局")
APPROVAL_PORTS = (8003, 8004, 8005)  # the approval system, its second instance, the payment service
APPROVAL_SYSTEMS = (("food-approval", "食品经营许可审批系统"), ("food-approval-2", "食品经营许可核验系统（第二系统）"))
PAYMENT_CLIENT = ("payment-service", "缴费平台（演示）")


def _approval(ctx: IdPContext, ca: CAContext, licences: LicencesContext, known: dict, ports: tuple[int, ...]) -> dict:
    """What examples/approval needs of Hallmark, registered as a department would (idempotent).

    The matter at level 3 in the catalogue; the approval system (sign in, the holder's consent, its department's
    seal, issuing food-business permits, the kiosk's device grant); a second instance that may compare permits
    under a standing grant; the payment service, which only validates.
    """
    from licenses import demo as licence_demo
    from licenses import grants
    from signing import seals

    code, name, level, department = APPROVAL_MATTER
    issuer = licence_demo.issuer_for(licence_demo.FOOD_PERMIT)
    registered = {}
    with core_db.transaction(ctx.sessions) as db:
        if levels.matter(db, code) is None:
            levels.set_matter(db, code, level=level, name=name, department=department, actor=ACTOR)
        wanted = [(client_id, title, port, "approval") for (client_id, title), port in zip(APPROVAL_SYSTEMS, ports[:2], strict=True)] + [
            (PAYMENT_CLIENT[0], PAYMENT_CLIENT[1], ports[2], "payment")
        ]
        for client_id, title, port, kind in wanted:
            base = f"http://127.0.0.1:{port}"
            secret = (known.get("clients") or {}).get(client_id)
            row = db.get(Client, client_id)
            if row is not None and kind == "approval" and json.loads(row.redirect_uris or "[]") != [base + "/callback"]:
                clients.remove(ctx, db, client_id, actor=ACTOR)  # moved to another port
                db.flush()
                row = None
            if row is None:
                if kind == "approval":
                    secret = clients.add(
                        ctx,
                        db,
                        client_id=client_id,
                        name=title,
                        client_type="confidential",
                        redirect_uris=[base + "/callback"],
                        grant_types=["authorization_code", "refresh_token", "client_credentials", clients.DEVICE_CODE],
                        scopes=[
                            "openid",
                            "profile",
                            "licences:read",
                            "licences:issue",
                            "sign:seal",
                            "sign:validate",
                            "sign:remote",
                            "ca:read",
                        ],
                        first_party=True,
                        post_logout_redirect_uris=[base + "/"],
                        actor=ACTOR,
                    ).client_secret
                else:
                    secret = clients.add(
                        ctx, db, client_id=client_id, name=title, client_type="confidential", scopes=["sign:validate"], actor=ACTOR
                    ).client_secret
            elif not secret:
                secret = clients.new_secret(ctx, db, client_id, actor=ACTOR)
            registered[client_id] = {"client_secret": secret, "base": base, "port": port, "name": title}
    first, second = (client_id for client_id, _ in APPROVAL_SYSTEMS)
    with core_db.transaction(licences.sessions) as db:
        grants.add(db, client_id=first, type_code=licence_demo.FOOD_PERMIT, mode=grants.ISSUE, matters=None, actor=ACTOR)
        grants.add(db, client_id=second, type_code=licence_demo.FOOD_PERMIT, mode=grants.COMPARE, matters=[code], actor=ACTOR)
    seals.grant(ca, first, issuer.code, actor=ACTOR)  # the department's seal: fee notices and the licences it issues
    return {
        "matter": code,
        "issuer": issuer.code,
        "officers": [REALNAME_USER],  # holds the demo USB key: level 3
        "clients": {k: v["client_secret"] for k, v in registered.items()},
        "instances": {k: v for k, v in registered.items() if k != PAYMENT_CLIENT[0]},
        "payment": registered[PAYMENT_CLIENT[0]],
    }


DEMO_ENTERPRISE = "示范市闽江食品有限公司"


def _licences(ctx: IdPContext, licences: LicencesContext) -> dict:
    """Demo licences: two held by the real-name demo person, two by an enterprise the legal-representative account represents."""
    from idp.models import Enterprise
    from idp.people import enterprises
    from licenses import catalogue as licence_catalogue
    from licenses import demo as licence_demo

    licence_demo.prepare_catalogue(licences, actor=ACTOR)
    person = realname.demo_people(1)[0]
    credit_code = demo_enterprise_code()
    with core_db.transaction(ctx.sessions) as db:
        if db.get(Enterprise, credit_code) is None:
            account = accounts.find(db, LEGAL_REP_USER)
            enterprises.add(db, credit_code=credit_code, name=DEMO_ENTERPRISE, representative=account.id, actor=ACTOR)
    issued = licence_demo.issue_samples(
        licences,
        holder_code=person.resident_id,
        holder_name=person.name,
        type_codes=(licence_demo.DRIVING_LICENCE, licence_demo.TEACHER_QUALIFICATION),
        actor=ACTOR,
    ) + licence_demo.issue_samples(
        licences,
        holder_code=credit_code,
        holder_name=DEMO_ENTERPRISE,
        type_codes=(licence_demo.BUSINESS_LICENCE, licence_demo.FOOD_PERMIT),
        actor=ACTOR,
    )
    with licences.sessions() as db:
        names = {t.code: t.name for t in licence_catalogue.all_types(db)}
    return {
        "enterprise": DEMO_ENTERPRISE,
        "issued": [
            {
                "identifier": row.identifier,
                "type": row.type_code,
                "type_name": names.get(row.type_code, row.type_code),
                "holder": row.holder_name,
                "verify_url": licences.verify_url(row.identifier),
            }
            for row in issued
        ],
    }


SEAL_DEPARTMENT = "示范市政务服务管理局"
SEALED_SAMPLE = "demo-sealed.pdf"


def _seal_sample(ca: CAContext, instance: Path, known: dict) -> dict:
    """A demo department seal, and a sample PDF sealed with it whose QR code opens the verification page."""
    from core.identifiers import generate_credit_code, organisation_code_check_char
    from signing import seals
    from signing.context import SigningContext
    from signing.models import Seal
    from signing.pdf import pades
    from signing.pdf.sample import sample_pdf

    with ca.sessions() as db:
        exists = db.get(Seal, SEAL_DEPARTMENT) is not None
    if not exists:
        organisation = "MA000100"  # a made-up organisation code; the prefix 11 marks a government body
        code = generate_credit_code("11350100" + organisation + organisation_code_check_char(organisation))
        seals.add(ca, department=SEAL_DEPARTMENT, credit_code=code, actor=ACTOR)
    target = instance / SEALED_SAMPLE
    if target.exists() and known.get("verify_url") and exists:
        return known
    sctx = SigningContext(ca=ca, public_url=ca.public_url)
    result = pades.seal_pdf(
        sctx,
        sample_pdf(),
        seal_name=SEAL_DEPARTMENT,
        level=pades.DEFAULT_LEVEL,
        placement=pades.Placement(),
        reason="演示 demo",
        actor=ACTOR,
    )
    target.write_bytes(result.pdf)
    return {"name": SEAL_DEPARTMENT, "sealed_pdf": str(target), "verify_url": result.verify_url}


def _account(ctx: IdPContext, username: str, display_name: str, known: dict) -> dict:
    password = known.get("password")
    with core_db.transaction(ctx.sessions) as db:
        account = accounts.find(db, username)
        if account is None:
            password = password or _demo_password()
            account = accounts.register(db, identifier=username, password=password, display_name=display_name, actor=ACTOR)
        elif not password:
            password = _demo_password()
            accounts.set_password(db, account, password, actor=ACTOR)
        return {"password": password, "account_id": account.id}


def _proof(ctx: IdPContext, username: str, index: int = 0) -> dict:
    """Verify a demo account against synthetic person ``index`` in the embedded registry."""
    person = realname.demo_people(index + 1)[index]
    realname.import_people(ctx, [person], actor=ACTOR, source="demo")
    with ctx.sessions() as db:
        account: Account = accounts.find(db, username)
        proofing = realname.proofing_of(db, account.id)
    if proofing is None:
        realname.verify_online(ctx, account.id, person.name, person.resident_id)
    # The full ID stays out of demo.json; the USB-key demo reads it from the registry's demo list.
    return {"legal_name": person.name, "resident_id_masked": mask_resident_id(person.resident_id)}


PEOPLE_FILE = "demo-people.csv"


def _registry_person(ctx: IdPContext, instance: Path, index: int) -> dict:
    """Put synthetic person ``index`` in the embedded registry, unverified, for an account to verify as in the demo.

    The full (synthetic) ID is written to an owner-only file in the instance, not printed.
    """
    person = realname.demo_people(index + 1)[index]
    realname.import_people(ctx, [person], actor=ACTOR, source="demo")
    path = instance / PEOPLE_FILE
    path.touch(mode=0o600)
    path.write_text(f"name,resident_id\n{person.name},{person.resident_id}\n", encoding="utf-8")
    return {"verify_as": person.name, "verify_as_masked": mask_resident_id(person.resident_id), "verify_file": str(path)}


def banner(info: DemoInfo, idp_url: str) -> str:
    lines = [
        "",
        "Hallmark demo — single sign-on across two halls",
        f"  identity provider   {idp_url}",
    ]
    for hall in info.halls.values():
        lines.append(f"  {hall['name']:<10}  {hall['base']}   ({hall['name_en']})")
    lines.append("  demo accounts (passwords are for this machine only):")
    for username, who in info.accounts.items():
        level = {1: "basic", 2: "real-name"}.get(who.get("level"), "?")
        lines.append(f"    {username:<14} {who['password']:<20} level {who.get('level')} {level}")
        if who.get("verify_as"):
            lines.append(
                f"    {'':<14} to step up to real-name, verify as {who['verify_as']} {who['verify_as_masked']}"
                f" (the full synthetic number: {who['verify_file']})"
            )
    if info.usb_key:
        lines.append(f"  demo USB key      token {info.usb_key['token']!r} holds {info.usb_key['holder']}'s certificate;")
        lines.append('                    the local agent (hallmark-key serve) is running: choose "USB Key 登录",')
        lines.append("                    then confirm on the agent's page that opens (确认签名)")
    if info.seal:
        lines.append(f"  demo seal         {info.seal['name']}; a sealed sample: {info.seal['sealed_pdf']}")
        lines.append(f"                    its verification page (the QR code on the stamp): {info.seal['verify_url']}")
        lines.append(f"                    seal your own: .venv/bin/hallmark sign pdf IN.pdf OUT.pdf --seal {info.seal['name']}")
    if info.licences:
        issued = info.licences["issued"]
        lines.append(
            f"  demo licences     {len(issued)} issued: two to {REALNAME_USER}, two to {info.licences['enterprise']} ({LEGAL_REP_USER}"
        )
        lines.append(f"                    represents it); log in and open {idp_url.rstrip('/')}/licences to see them, show one (亮证)")
        lines.append("                    and see who looked at them. Each one's verification page (what its QR code opens):")
        for licence in issued:
            lines.append(f"                    {licence.get('type_name', licence['type'])}  {licence['holder']}")
            lines.append(f"                      {licence['verify_url']}")
        lines.append("                    list them: .venv/bin/hallmark licences list")
    if info.approval:
        first, second = info.approval["instances"].values()
        lines.append(f"  approval system   {first['base']}  {first['name']} (examples/approval, matter {info.approval['matter']}, level 3)")
        lines.append(f"                    second instance {second['base']}; payment service {info.approval['payment']['base']}")
        lines.append(f"                    try it: log in as {LEGAL_REP_USER}, act for the enterprise with its USB key (the demo key")
        lines.append("                    holds it too), allow the licence check, apply, sign the form, pay; open /kiosk and approve")
        lines.append(f"                    its code; approve at /officer as {REALNAME_USER} (USB key); verify the licence at the second")
        lines.append("                    instance's /verify, then suspend it at /officer: the second instance hears of it")
    lines.append(
        f"  staff console     {idp_url.rstrip('/')}/admin  (a role first: .venv/bin/hallmark admin grant {REALNAME_USER} system_admin;"
    )
    lines.append("                    see docs/admin.md)")
    lines.append("  Log in at one hall, open the other: you are already logged in. Log out at either: both end.")
    lines.append(f"  (kept in {info.path})")
    return "\n".join(lines)


# -- the demo USB key (make run) ----------------------------------------------------------------


DEMO_ENTERPRISE_ORGANISATION = "MA2Y0001"  # the organisation code in the demo enterprise's credit code


def demo_enterprise_code() -> str:
    from core.identifiers import generate_credit_code, organisation_code_check_char

    organisation = DEMO_ENTERPRISE_ORGANISATION
    return generate_credit_code("91350100" + organisation + organisation_code_check_char(organisation))


def put_enterprise_keys_on_demo_usb_key(ca: CAContext, instance: Path, *, actor: str = "system:demo") -> list[str]:
    """The demo enterprise's login and signing keys on the demo USB key too (for examples/approval); their profiles.

    One key for the whole demo, as one agent serves the login page: its person certificate logs
    ``demo-realname`` in, the enterprise-auth one lets the enterprise's representative act for it at
    level 3 (the login page names the certificate it wants), the enterprise-sign one signs its forms.
    Keys are made on the token by ``hallmark-key request`` and certified in-process, as a counter would.
    Safe to repeat: a profile with a valid certificate for the enterprise on the key is left alone.
    """
    import time

    directory = (instance / "demo-usb-key").absolute()
    code = demo_enterprise_code()
    digest = lookup_hash(ca.lookup_key, "credit_code", code)
    listed = json.loads(_hallmark_key(directory, "list", "--json").stdout)
    held = [c["fingerprint"] for t in listed["tokens"] for c in t["certificates"] if c["has_key"]]
    with ca.sessions() as db:
        rows = [db.scalar(select(Certificate).where(Certificate.fingerprint == f)) for f in held]
    present = {r.profile for r in rows if r is not None and r.status == "valid" and r.not_after > utc_now() and r.subject_id_hash == digest}
    for profile in ("enterprise-auth", "enterprise-sign"):
        if profile in present:
            continue
        # hallmark-key names a new key after its profile and the time to the second: one key a second.
        time.sleep(1.1)
        csr = _hallmark_key(directory, "request", "--profile", "enterprise-auth", "--name", DEMO_ENTERPRISE).stdout
        row, certificate = issuance.issue(ca, profile, csr, issuance.Identity(name=DEMO_ENTERPRISE, subject_id=code), actor=actor)
        bundle = "".join(c.public_bytes(Encoding.PEM).decode() for c in (certificate, *chain_of(ca, row.authority)))
        _hallmark_key(directory, "import-certificate", "-", stdin=bundle)
    return ["enterprise-auth", "enterprise-sign"]


@dataclass(frozen=True)
class DemoUsbKey:
    directory: Path
    softhsm2_conf: Path
    token_label: str
    agent_config: Path  # for `hallmark-key serve --config ...` (holds the demo PIN, owner-only)
    serial: str | None  # the certificate enrolled now, or None when the key had one already


def _hallmark_key(directory: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HALLMARK_KEY_CONFIG": str(directory / "agent.toml")}
    env.pop("HALLMARK_KEY_PIN", None)
    result = subprocess.run(
        [sys.executable, "-m", "keyagent.cli", *args], input=stdin, env=env, capture_output=True, text=True, timeout=120
    )
    if result.returncode != 0:
        raise RuntimeError(f"hallmark-key {args[0]} failed: {result.stderr.strip() or result.stdout.strip()}")
    return result


def prepare_demo_usb_key(ca: CAContext, instance: Path, *, resident_id: str, name: str, actor: str = "system:demo") -> DemoUsbKey:
    """Make the demo USB key in ``instance/demo-usb-key`` and put a person-auth certificate on it.

    The token is driven by the ``hallmark-key`` program, as on a user's PC (the key
    is generated inside it and a CSR comes out); the certificate is issued here,
    in-process, through ``ca.issuance``, as a counter clerk would. Safe to repeat:
    a key that already holds a valid certificate for this resident ID is left alone.
    """
    directory = (instance / "demo-usb-key").absolute()
    digest = lookup_hash(ca.lookup_key, "resident_id", validate_resident_id(resident_id).value)
    for _ in (1, 2):
        made = demo_usbkey.create_demo_token(directory, allowed_origins=[ca.public_url])
        listed = json.loads(_hallmark_key(directory, "list", "--json").stdout)
        held = [c["fingerprint"] for t in listed["tokens"] if t["label"] == made.token for c in t["certificates"] if c["has_key"]]
        if not held:
            break
        with ca.sessions() as db:
            rows = [db.scalar(select(Certificate).where(Certificate.fingerprint == f)) for f in held]
        if any(
            r is not None and r.status == "valid" and r.not_after > utc_now() and r.subject_id_hash == digest and r.profile == "person-auth"
            for r in rows
        ):
            return DemoUsbKey(directory, made.softhsm2_conf, made.token, made.agent_config, None)
        # Certificates from another demo database, revoked or for someone else: start the demo key afresh,
        # so the agent never has to ask which certificate to use.
        shutil.rmtree(directory)
    csr = _hallmark_key(directory, "request", "--profile", "person-auth", "--name", name).stdout
    row, certificate = issuance.issue(ca, "person-auth", csr, issuance.Identity(name=name, subject_id=resident_id), actor=actor)
    bundle = "".join(c.public_bytes(Encoding.PEM).decode() for c in (certificate, *chain_of(ca, row.authority)))
    _hallmark_key(directory, "import-certificate", "-", stdin=bundle)
    return DemoUsbKey(directory, made.softhsm2_conf, made.token, made.agent_config, row.serial)
