"""``hallmark licences ...``: thin commands over the licence library's services.

The composition root puts the services on the root click context; ``service("licenses")`` is ours.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import click

from licenses import catalogue, issuance, issuers, library, lifecycle
from licenses.context import NAME, LicencesContext

ACTOR = "cli"


def _ctx() -> LicencesContext:
    return click.get_current_context().find_root().obj.service(NAME)


def _json_arg(value: str, what: str) -> dict:
    """A JSON object given inline or as @FILE / a path to a .json file."""
    text = value
    path = Path(value[1:] if value.startswith("@") else value)
    if value.startswith("@") or (value.endswith(".json") and path.exists()):
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise click.ClickException(f"cannot read {path}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise click.ClickException(f"{what} is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise click.ClickException(f"{what} must be a JSON object")
    return data


def _day(value: str | None) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)") from None


def _print(body: dict) -> None:
    status = body["status"]
    click.echo(f"licence      {body['identifier']}")
    click.echo(f"type         {body['type']['name']} ({body['type']['code']})")
    click.echo(f"issuer       {body['issuer']['name']} ({body['issuer']['code']})")
    click.echo(f"holder       {body['holder']['name']} ({body['holder']['code']})")
    until = status["valid_until"] or "no end date"
    click.echo(f"state        {status['state']}  valid {status['valid_from']} .. {until}  version {body['version']}")
    if status["reason"]:
        click.echo(f"reason       {status['reason']}")
    if body["predecessor"]:
        click.echo(f"replaces     {body['predecessor']}")
    if body["successor"]:
        click.echo(f"replaced by  {body['successor']}")
    for name, value in (body.get("face") or {}).items():
        click.echo(f"  {name:<22} {value}")
    click.echo(f"verify       {body['verify_url']}")


@click.group(name="licences")
def licences():
    """The electronic licence library: types, issuers, issuing and the lifecycle of licences."""


@licences.group(name="type")
def type_group():
    """The catalogue of licence types."""


@type_group.command(name="add")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
def type_add(files):
    """Add licence types from JSON definitions (see licenses/types/ for examples)."""
    ctx = _ctx()
    for path in files:
        definition = catalogue.read_file(Path(path))
        with ctx.sessions() as db, db.begin():
            _row, created = catalogue.add(db, definition, actor=ACTOR)
        click.echo(f"{'added  ' if created else 'present'}  {definition.code}  {definition.name}")


@type_group.command(name="list")
@click.option("--json", "as_json", is_flag=True)
def type_list(as_json):
    """List the licence types."""
    with _ctx().sessions() as db:
        types = catalogue.all_types(db)
    if as_json:
        click.echo(json.dumps([t.as_json() for t in types], ensure_ascii=False))
        return
    if not types:
        click.echo("no licence types yet; add one with 'hallmark licences type add FILE.json'")
    for t in types:
        until = (
            f"{t.validity.get('years', 0) or t.validity.get('months', 0)} {'years' if 'years' in t.validity else 'months'}"
            if t.validity
            else "no end"
        )
        click.echo(f"{t.code}  {t.name}  [{t.holder_kind}, {len(t.fields)} fields, validity {until}]  {t.authority_name}")


@type_group.command(name="show")
@click.argument("code")
def type_show(code):
    """Show one type's definition as JSON."""
    with _ctx().sessions() as db:
        click.echo(json.dumps(catalogue.get(db, code).as_json(), ensure_ascii=False, indent=2))


@licences.group(name="issuer")
def issuer_group():
    """Issuing departments and their seals."""


@issuer_group.command(name="add")
@click.argument("credit_code")
@click.argument("name")
@click.option("--seal", "seal_name", required=True, help="the department's seal (hallmark sign seal list)")
def issuer_add(credit_code, name, seal_name):
    """Register a department as an issuer of licences."""
    with _ctx().sessions() as db, db.begin():
        row, created = issuers.add(db, credit_code=credit_code, name=name, seal_name=seal_name, actor=ACTOR)
    click.echo(f"{'added  ' if created else 'present'}  {row.credit_code}  {row.name}  seal {row.seal_name}")


@issuer_group.command(name="list")
def issuer_list():
    """List the issuing departments."""
    with _ctx().sessions() as db:
        rows = issuers.all_issuers(db)
    if not rows:
        click.echo("no issuers yet; add one with 'hallmark licences issuer add CREDIT_CODE NAME --seal SEAL'")
    for row in rows:
        click.echo(f"{row.credit_code}  {row.name}  seal {row.seal_name}")


@licences.command(name="issue")
@click.option("--type", "type_code", required=True, help="licence type code (21 characters)")
@click.option("--issuer", "issuer_code", required=True, help="issuing department's credit code")
@click.option("--holder", required=True, help="the holder's resident ID or unified social credit code")
@click.option("--face", required=True, help="face data: JSON, or @FILE")
@click.option("--valid-from", help="YYYY-MM-DD (default: today)")
@click.option("--valid-until", help="YYYY-MM-DD (default: from the type's validity rule)")
@click.option("--serial", help="the licence number (default: year + 10 random digits)")
@click.option("--request-id", help="your idempotency key: the same one again returns the first licence")
@click.option("--json", "as_json", is_flag=True)
def issue(type_code, issuer_code, holder, face, valid_from, valid_until, serial, request_id, as_json):
    """Issue a licence: validate, render its file, seal it with the department's seal."""
    ctx = _ctx()
    order = issuance.Order(
        type_code=type_code,
        issuer_code=issuer_code,
        holder_code=holder,
        face=_json_arg(face, "--face"),
        valid_from=_day(valid_from),
        valid_until=_day(valid_until),
        serial=serial,
        request_id=request_id,
    )
    licence = issuance.issue(ctx, order, actor=ACTOR, requester=ACTOR)
    _show(ctx, licence.identifier, as_json, face="masked")


def _show(ctx: LicencesContext, identifier: str, as_json: bool, face: str = "masked") -> None:
    with ctx.sessions() as db:
        body = library.describe(ctx, db, library.by_identifier(db, identifier), face=face)
    if as_json:
        click.echo(json.dumps(body, ensure_ascii=False))
    else:
        _print(body)


@licences.command(name="list")
@click.option("--holder", help="a holder's resident ID or credit code")
@click.option("--type", "type_code", help="only this licence type")
@click.option("--json", "as_json", is_flag=True)
def list_licences(holder, type_code, as_json):
    """List a holder's licences (without --holder: the most recent ones)."""
    from sqlalchemy import select

    from licenses.models import Licence

    ctx = _ctx()
    with ctx.sessions() as db:
        if holder:
            code_type = "111" if len(holder.strip()) == 18 and holder.strip()[:17].isdigit() else "001"
            rows = library.by_holder(ctx, db, code_type, holder, type_code)
        else:
            query = select(Licence).order_by(Licence.issued_at.desc()).limit(50)
            if type_code:
                query = query.where(Licence.type_code == type_code)
            rows = list(db.scalars(query))
        bodies = [library.describe(ctx, db, row) for row in rows]
    if as_json:
        click.echo(json.dumps(bodies, ensure_ascii=False))
        return
    if not bodies:
        click.echo("no licences found")
    for body in bodies:
        status = body["status"]
        click.echo(
            f"{body['identifier']}  {status['state']:<10} {body['type']['name']}  {body['holder']['name']} ({body['holder']['code']})"
        )


@licences.command(name="show")
@click.argument("identifier")
@click.option("--full", is_flag=True, help="show sensitive face fields unmasked (audited)")
@click.option("--json", "as_json", is_flag=True)
def show(identifier, full, as_json):
    """Show one licence: state, validity, versions and face."""
    ctx = _ctx()
    if full:
        from core import audit

        with ctx.sessions() as db, db.begin():
            audit.record(db, actor=ACTOR, action="licences.face.read", target=library.check_identifier(identifier), details={"via": "cli"})
    _show(ctx, identifier, as_json, face="full" if full else "masked")


@licences.command(name="file")
@click.argument("identifier")
@click.argument("out", type=click.Path(dir_okay=False))
def file_command(identifier, out):
    """Write a licence's sealed file (PDF) to OUT."""
    from licenses.models import Licence

    ctx = _ctx()
    with ctx.sessions() as db:
        licence = library.by_identifier(db, identifier)
        pdf = db.get(Licence, licence.identifier).pdf
    if pdf is None:
        raise click.ClickException("this licence's file is not sealed yet")
    target = Path(out)
    part = target.with_name(f".{target.name}.part")
    try:
        part.write_bytes(pdf)
        part.replace(target)
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise click.ClickException(f"cannot write {out}: {exc.strerror}") from None
    click.echo(f"wrote {out} ({len(pdf)} bytes)")


def _state_command(action: str, help_text: str, reason_required: bool = True):
    @click.argument("identifier")
    @click.option("--reason", required=reason_required, help="why (up to 200 characters); goes into the history and audit trail")
    @click.option("--json", "as_json", is_flag=True)
    def command(identifier, reason, as_json):
        ctx = _ctx()
        with ctx.sessions() as db, db.begin():
            lifecycle.change_state(db, library.check_identifier(identifier), action, reason=reason, actor=ACTOR)
        _show(ctx, identifier, as_json, face="none")

    command.__doc__ = help_text
    return licences.command(name=action)(command)


_state_command("suspend", "Suspend a licence (暂扣); 'resume' lifts it.")
_state_command("resume", "Lift a suspension.", reason_required=False)
_state_command("revoke", "Revoke a licence as a penalty (吊销); final.")
_state_command("withdraw", "Withdraw a licence (撤销); final.")
_state_command("cancel", "Cancel a licence (注销); final.")


@licences.command(name="renew")
@click.argument("identifier")
@click.option("--valid-until", help="YYYY-MM-DD (default: from the type's validity rule)")
@click.option("--face", help="changed face fields: JSON, or @FILE")
@click.option("--reason", help="why (optional for a renewal)")
@click.option("--json", "as_json", is_flag=True)
def renew(identifier, valid_until, face, reason, as_json):
    """Renew a licence: a new version with a new validity; the old one is superseded."""
    ctx = _ctx()
    licence = issuance.next_version(
        ctx,
        library.check_identifier(identifier),
        action="renew",
        actor=ACTOR,
        reason=reason,
        face_changes=_json_arg(face, "--face") if face else None,
        valid_until=_day(valid_until),
    )
    _show(ctx, licence.identifier, as_json)


@licences.command(name="change")
@click.argument("identifier")
@click.option("--face", required=True, help="changed face fields: JSON, or @FILE")
@click.option("--reason", required=True, help="why the face changes")
@click.option("--json", "as_json", is_flag=True)
def change(identifier, face, reason, as_json):
    """Change a licence's face: a new version; the old one is superseded."""
    ctx = _ctx()
    licence = issuance.next_version(
        ctx, library.check_identifier(identifier), action="change", actor=ACTOR, reason=reason, face_changes=_json_arg(face, "--face")
    )
    _show(ctx, licence.identifier, as_json)


# -- standing grants (licenses.grants) -------------------------------------------------------------


@licences.group(name="grant")
def grant_group():
    """Standing grants: which client may reach which licence type, how, and for which matters (public)."""


@grant_group.command(name="add")
@click.argument("client_id")
@click.argument("type_code")
@click.option("--mode", default="compare", show_default=True, help="compare | read | copy (each includes the ones before) | issue")
@click.option("--matter", "matters", multiple=True, help="a matter code the grant serves (repeat); none or '*': any matter")
@click.option("--json", "as_json", is_flag=True)
def grant_add(client_id, type_code, mode, matters, as_json):
    """Let CLIENT_ID reach licences of TYPE_CODE in a mode, for some matters."""
    from licenses import grants

    with _ctx().sessions() as db, db.begin():
        row, created = grants.add(db, client_id=client_id, type_code=type_code, mode=mode, matters=list(matters), actor=ACTOR)
        body = grants.as_json(row)
    if as_json:
        click.echo(json.dumps(body, ensure_ascii=False))
        return
    click.echo(
        f"{'added  ' if created else 'present'}  #{body['id']}  {body['client_id']}  {body['type']}  {body['mode']}  "
        f"matters {', '.join(body['matters'])}"
    )


@grant_group.command(name="list")
@click.option("--all", "include_revoked", is_flag=True, help="also the revoked ones")
@click.option("--json", "as_json", is_flag=True)
def grant_list(include_revoked, as_json):
    """List the standing grants."""
    from licenses import grants

    with _ctx().sessions() as db:
        bodies = [grants.as_json(row) for row in grants.active(db, include_revoked=include_revoked)]
    if as_json:
        click.echo(json.dumps(bodies, ensure_ascii=False))
        return
    if not bodies:
        click.echo("no standing grants; add one with 'hallmark licences grant add CLIENT TYPE --mode compare --matter M'")
    for body in bodies:
        ended = f"  revoked {body['revoked_at']}" if body["revoked_at"] else ""
        click.echo(f"#{body['id']:<5} {body['client_id']}  {body['type']}  {body['mode']:<8} matters {', '.join(body['matters'])}{ended}")


@grant_group.command(name="revoke")
@click.argument("grant_id", type=int)
def grant_revoke(grant_id):
    """End a standing grant (it stays listed with --all)."""
    from licenses import grants

    with _ctx().sessions() as db, db.begin():
        row = grants.revoke(db, grant_id, actor=ACTOR)
        click.echo(f"revoked  #{row.id}  {row.client_id}  {row.type_code}  {row.mode}")


# -- requests for missing licences (索取), until the staff console has them ---------------------


def _request_line(body: dict) -> str:
    late = "  OVERDUE" if body["overdue"] else ""
    answer = body["answer"] or {}
    outcome = (answer.get("licence") or {}).get("identifier") or answer.get("decision") or ""
    return (
        f"{body['id']}  {body['state']:<9} due {body['deadline']}{late}  {body['type']['name']}  {body['issuer']['name']}"
        f"  holder {body['holder']['code']}  matter {body['matter']}  reason {body['reason']}" + (f"  -> {outcome}" if outcome else "")
    )


@licences.command(name="requests")
@click.option("--issuer", "issuer_code", help="the department's queue (its credit code)")
@click.option("--state", type=click.Choice(["open", "fulfilled", "refused"]), help="only requests in this state")
@click.option("--overdue", is_flag=True, help="only open requests past their deadline (every department without --issuer)")
@click.option("--json", "as_json", is_flag=True)
def requests_list(issuer_code, state, overdue, as_json):
    """Requests for missing licences (索取): a department's queue, or the overdue ones of every department."""
    from licenses import requests as licence_requests

    if not issuer_code and not overdue:
        raise click.UsageError("name a department with --issuer CODE, or list every department's overdue requests with --overdue")
    ctx = _ctx()
    with ctx.sessions() as db:
        if issuer_code:
            rows = licence_requests.queue(db, issuer_code, state=state, overdue_only=overdue)
        else:
            rows = [row for row in licence_requests.overdue(db) if state in (None, row.state)]
        bodies = [licence_requests.as_json(ctx, db, row) for row in rows]
    if as_json:
        click.echo(json.dumps(bodies, ensure_ascii=False))
        return
    if not bodies:
        click.echo("no requests")
    for body in bodies:
        click.echo(_request_line(body))


@licences.group(name="request")
def request_group():
    """Answer one request for a missing licence: fulfil it (link or issue a licence) or refuse it."""


@request_group.command(name="show")
@click.argument("request_id")
@click.option("--json", "as_json", is_flag=True)
def request_show(request_id, as_json):
    """Show one request."""
    from licenses import requests as licence_requests

    ctx = _ctx()
    with ctx.sessions() as db:
        body = licence_requests.as_json(ctx, db, licence_requests.get(db, request_id))
    click.echo(json.dumps(body, ensure_ascii=False, indent=2) if as_json else _request_line(body))


@request_group.command(name="fulfil")
@click.argument("request_id")
@click.option("--licence", "identifier", help="a licence of this holder and type already in the library")
@click.option("--face", help="issue a licence with this face data: JSON, or @FILE")
@click.option("--valid-from", help="YYYY-MM-DD (default: today)")
@click.option("--valid-until", help="YYYY-MM-DD (default: from the type's validity rule)")
@click.option("--holder", help="the holder's code, when the request came without one (checked against the request)")
@click.option("--note", help="a note for the requester")
@click.option("--json", "as_json", is_flag=True)
def request_fulfil(request_id, identifier, face, valid_from, valid_until, holder, note, as_json):
    """Fulfil a request: link a licence (--licence ID) or issue one (--face @FILE)."""
    from licenses import requests as licence_requests

    if bool(identifier) == bool(face):
        raise click.UsageError("give either --licence ID or --face @FILE")
    order = None
    if face:
        order = issuance.Order(
            type_code="", issuer_code="", holder_code=holder or "", face=_json_arg(face, "--face"),
            valid_from=_day(valid_from), valid_until=_day(valid_until),
        )  # fmt: skip
    ctx = _ctx()
    row = licence_requests.fulfil(ctx, request_id, identifier=identifier, order=order, actor=ACTOR, note=note or "")
    with ctx.sessions() as db:
        body = licence_requests.as_json(ctx, db, row)
    click.echo(json.dumps(body, ensure_ascii=False) if as_json else _request_line(body))


@request_group.command(name="refuse")
@click.argument("request_id")
@click.option("--reason", required=True, help="why (the requester reads it; at most 200 characters)")
@click.option("--json", "as_json", is_flag=True)
def request_refuse(request_id, reason, as_json):
    """Refuse a request, saying why."""
    from licenses import requests as licence_requests

    ctx = _ctx()
    row = licence_requests.refuse(ctx, request_id, reason=reason, actor=ACTOR)
    with ctx.sessions() as db:
        body = licence_requests.as_json(ctx, db, row)
    click.echo(json.dumps(body, ensure_ascii=False) if as_json else _request_line(body))


# -- bulk import of legacy licences (licenses.imports) ------------------------------------------


class _Progress:
    """A progress line with rate and ETA on a terminal (by bytes read); a plain log line every ``every`` rows otherwise."""

    def __init__(self, every: int):
        import sys
        import time

        self.tty = sys.stderr.isatty()
        self.every, self.next_line = every, every
        self.started = time.monotonic()
        self._clock = time.monotonic

    def __call__(self, done: int, total: int, result) -> None:
        elapsed = max(self._clock() - self.started, 1e-6)
        rate = result.rows_read / elapsed
        if self.tty:
            share = done / total if total else 1.0
            eta = elapsed * (1 - share) / share if share > 0 else 0
            minutes, seconds = divmod(int(eta), 60)
            bar = "#" * int(share * 30)
            click.echo(
                f"\r[{bar:<30}] {share:6.1%}  {result.rows_read:,} rows  {rate:,.0f} rows/s  ETA {minutes}:{seconds:02d}  ",
                err=True,
                nl=False,
            )
            if done >= total:
                click.echo("", err=True)
        elif result.rows_read >= self.next_line or done >= total:
            click.echo(
                f"import: {result.rows_read:,} rows read ({result.rows_added:,} added, {result.rows_existing:,} existing, "
                f"{result.rows_rejected:,} rejected), {rate:,.0f} rows/s",
                err=True,
            )
            while self.next_line <= result.rows_read:
                self.next_line += self.every


@licences.command(name="import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--type", "type_code", required=True, help="the licence type of every row")
@click.option("--issuer", "issuer_code", required=True, help="the issuing department's credit code")
@click.option("--encoding", type=click.Choice(["utf-8", "gbk", "gb18030"]), help="a CSV file's encoding (default: UTF-8, else GB18030/GBK)")
@click.option("--mapping", "mapping_path", type=click.Path(dir_okay=False, path_type=Path), help="JSON: local column names -> fields")
@click.option("--errors", "errors_path", type=click.Path(dir_okay=False, path_type=Path), help="the error report (default FILE.errors.csv)")
@click.option("--batch", default=1000, show_default=True, help="rows per transaction")
@click.option("--format", "kind", type=click.Choice(["csv", "jsonl", "xlsx"]), help="default: from the file name")
@click.option("--log-every", default=100_000, show_default=True, help="rows between log lines when not on a terminal")
@click.option("--json", "as_json", is_flag=True)
def import_(file, type_code, issuer_code, encoding, mapping_path, errors_path, batch, kind, log_every, as_json):
    """Import legacy licences from a CSV, JSONL or XLSX file: idempotent, resumable; files are sealed later (seal-pending)."""
    import getpass

    from licenses import imports

    actor = f"{ACTOR}:{getpass.getuser()}"[:200]
    try:
        result = imports.import_file(
            _ctx(),
            file,
            type_code=type_code,
            issuer_code=issuer_code,
            actor=actor,
            encoding=encoding,
            mapping_path=mapping_path,
            error_report=errors_path,
            batch=batch,
            kind=kind,
            progress=None if as_json else _Progress(max(1, log_every)),
        )
    except imports.ImportFailed as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(result.as_json(), ensure_ascii=False))
        return
    if result.resumed_after:
        click.echo(f"resumed      after row {result.resumed_after:,}")
    click.echo(f"import       {result.run_id}  ({result.encoding}, sha256 {result.source_sha256[:16]}…)")
    click.echo(
        f"rows         {result.rows_read:,} read, {result.rows_added:,} added, {result.rows_existing:,} already there, {result.rows_rejected:,} rejected"
    )
    if result.rows_rejected:
        click.echo(f"errors       {result.error_report}")
    if result.rows_added:
        click.echo(f"files        queued for sealing: hallmark licences seal-pending (this run's only: --run {result.run_id})")


@licences.command(name="seal-pending")
@click.option("--limit", type=click.IntRange(min=1), help="seal at most this many files (default: all waiting)")
@click.option("--batch", default=20, show_default=True, help="files claimed at a time")
@click.option(
    "--reclaim", is_flag=True, help="first put files left 'sealing' by a worker that died back in the queue (no worker may be running)"
)
@click.option("--run", "run_id", help="only the licences of this import run (its id, as the import printed it)")
def seal_pending(limit, batch, reclaim, run_id):
    """Render and seal the files of imported licences (several workers may run this at once)."""
    from licenses import imports

    ctx = _ctx()
    if reclaim:
        click.echo(f"reclaimed    {imports.reclaim(ctx):,}")
    done = imports.seal_pending(ctx, limit=limit, batch=max(1, batch), actor=ACTOR, run=run_id)
    with ctx.sessions() as db:
        left = imports.pending_count(db, run=run_id)
    click.echo(
        f"sealed       {done.sealed:,}"
        + (f", {done.failed:,} failed (see the log; they stay queued)" if done.failed else "")
        + f"; {left:,} waiting"
    )
    if done.failed:
        raise SystemExit(1)


# -- expiry and status lists (licenses.expiry, licenses.statuslist) -------------------------------


@licences.command(name="expire")
@click.option("--today", "today", help="expire licences whose validity ended before this day (YYYY-MM-DD; default: today, China time)")
@click.option("--batch", type=click.IntRange(1, 10000), default=200, show_default=True, help="licences per transaction")
def expire_command(today, batch):
    """Move valid and suspended licences past their validity to expired (the periodic job does this hourly)."""
    from licenses import expiry

    moved = expiry.expire(_ctx(), today=_day(today), batch=batch, actor=ACTOR)
    click.echo(f"expired {moved} licence(s)")
