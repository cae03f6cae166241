"""hallmark-key's rules on their own: settings, origins, what the agent agrees to sign."""

from __future__ import annotations

import hashlib

import pytest
from asn1crypto import cms

from keyagent import agent, approval, config, confirm_page


def test_origins_are_normalised_and_wildcards_refused():
    assert config.normalise_origin("HTTPS://Hall.Example.gov.cn:443/") == "https://hall.example.gov.cn"
    assert config.normalise_origin("http://127.0.0.1:8000") == "http://127.0.0.1:8000"
    for bad in (
        "*",
        "null",
        "",
        "https://*.example.gov.cn",
        "https://hall.example/path",
        "ftp://hall.example",
        "https://hall.example:99999",
    ):
        with pytest.raises(config.ConfigError):
            config.normalise_origin(bad)


def test_settings_file_then_environment(tmp_path):
    path = tmp_path / "agent.toml"
    path.write_text('token = "my key"\nport = 18000\nallowed_origins = ["https://hall.example"]\npin = "1234"\n')
    loaded = config.load(path, environ={"HALLMARK_KEY_TOKEN": "other key"})
    assert (loaded.token, loaded.port, loaded.allowed_origins, loaded.pin) == ("other key", 18000, ["https://hall.example"], "1234")
    assert "1234" not in repr(loaded)
    path.write_text("prot = 1\n")
    with pytest.raises(config.ConfigError, match="unknown setting"):
        config.load(path, environ={})
    path.write_text('port = "high"\n')
    with pytest.raises(config.ConfigError, match="port"):
        config.load(path, environ={})
    path.write_text('allowed_origins = ["*"]\n')
    with pytest.raises(config.ConfigError, match="no wildcards"):
        config.load(path, environ={})
    with pytest.raises(config.ConfigError, match="no such"):
        config.load(tmp_path / "missing.toml", environ={})
    # Without an explicit file and none at the default place: defaults.
    assert config.load(environ={"XDG_CONFIG_HOME": str(tmp_path / "none")}).port == config.DEFAULT_PORT


def test_login_challenge_rules():
    origin, now = "https://id.example", 1_800_000_000
    good = f"hallmark-login/1 {origin} {'n' * 32} {now + 60}".encode()
    assert agent.check_login_challenge(good, origin, now=now).startswith("hallmark-login/1 ")
    cases = {
        f"hallmark-login/1 {origin} {'n' * 32} {now}": "expired_challenge",
        f"hallmark-login/1 {origin} {'n' * 32} {now + 601}": "bad_challenge",
        f"hallmark-login/1 https://evil.example {'n' * 32} {now + 60}": "origin_mismatch",
        f"hallmark-login/1 {origin} short {now + 60}": "bad_challenge",
        f"hallmark-login/1  {origin} {'n' * 32} {now + 60}": "bad_challenge",
        f"hallmark-login/1 {origin} {'n' * 32} {now + 60} extra": "bad_challenge",
        f"hallmark-login/1 {origin} {'n' * 32} ١٢٣": "bad_challenge",
    }
    for text, error in cases.items():
        with pytest.raises(agent.Refused) as refused:
            agent.check_login_challenge(text.encode(), origin, now=now)
        assert refused.value.error == error, text


def test_document_data_must_be_der_signed_attributes():
    attributes = cms.CMSAttributes(
        [
            cms.CMSAttribute({"type": "content_type", "values": ["data"]}),
            cms.CMSAttribute({"type": "message_digest", "values": [hashlib.sha256(b"x").digest()]}),
        ]
    ).dump()
    agent.check_signed_attributes(attributes)
    no_digest = cms.CMSAttributes([cms.CMSAttribute({"type": "content_type", "values": ["data"]})]).dump()
    # The same content with an indefinite length (BER, not DER).
    ber = b"\x31\x80" + attributes[2:] + b"\x00\x00"
    for data in (no_digest, ber, b"\x31\x03\x02\x01\x01", b"hallmark-login/1 x", b"\x30\x00"):
        with pytest.raises(agent.Refused):
            agent.check_signed_attributes(data)


def test_base64url_round_trip():
    for data in (b"", b"\xff", b"\xfb\xff\xfe" * 7):
        assert agent.b64url_decode(agent.b64url(data)) == data
    with pytest.raises(ValueError):
        agent.b64url_decode("a+b/")


def _request(approvals, **overrides):
    details = {
        "origin": "https://hall.example",
        "purpose": "document",
        "data": b"\x31\x00",
        "certificate_id": "01",
        "certificate_subject": "CN=示范科技有限公司",
        "document_name": "申报表.pdf",
        "document_pages": 3,
        "digest": "ab" * 32,
    }
    return approvals.create(**{**details, **overrides})


def test_a_signing_request_is_decided_once_before_it_expires():
    now = [1_800_000_000.0]
    approvals = approval.Approvals(lifetime=120, clock=lambda: now[0])
    signed = []
    first = _request(approvals)
    with pytest.raises(approval.Unavailable) as wrong:
        approvals.decide(first.id, "not-the-token", True, signed.append)
    assert wrong.value.error == "bad_csrf_token" and signed == []
    approvals.decide(first.id, first.csrf, True, lambda r: {"signature": "x"})
    with pytest.raises(approval.Unavailable) as again:
        approvals.decide(first.id, first.csrf, True, lambda r: {"signature": "y"})
    assert again.value.error == "already_decided"
    with pytest.raises(approval.Unavailable):
        approvals.collect(first.id, "https://other.example")
    assert approvals.collect(first.id, "https://hall.example").answer == {"signature": "x"}
    with pytest.raises(approval.Unavailable) as replay:
        approvals.collect(first.id, "https://hall.example")
    assert replay.value.error == "already_used"
    late = _request(approvals)
    now[0] += 121
    with pytest.raises(approval.Unavailable) as expired:
        approvals.decide(late.id, late.csrf, True, signed.append)
    assert expired.value.error == "expired" and signed == []
    with pytest.raises(approval.Unavailable) as gone:
        approvals.collect(late.id, "https://hall.example")
    assert gone.value.error == "expired"
    for _ in range(approval.MAX_PENDING):
        _request(approvals)
    with pytest.raises(approval.Unavailable) as full:
        _request(approvals)
    assert full.value.status == 429


def test_the_confirmation_page_shows_what_the_site_stated_harmlessly():
    approvals = approval.Approvals()
    name = "合同\u202efdp.exe<script>alert(1)</script>"
    shown, status, nonce = confirm_page.request_page(_request(approvals, document_name=name), approvals.clock())
    assert status == 200 and nonce in shown
    assert "\u202e" not in shown and "<script>" not in shown and "&lt;script&gt;" in shown
    assert shown.index("文件名称") < shown.index("Document<") and "ab" * 4 + " " + "ab" * 4 in shown
    assert "https://hall.example" in shown and 'name="csrf_token"' in shown
