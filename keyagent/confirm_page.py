"""The agent's own confirmation page (``http://127.0.0.1:<port>/confirm/<id>``).

hallmark-key has no translation catalogue: its one page says everything in Simplified
Chinese first and English second. Whatever a site stated (the document's name) is
escaped and stripped of control and bidirectional-override characters before it
is shown, and the page says which facts the site stated and which the agent read
itself (the site's origin, the certificate, the digest the signature covers).
"""

from __future__ import annotations

import html
import secrets
import unicodedata

from keyagent.approval import SigningRequest

STYLE = """
body{font:16px/1.5 system-ui,"Noto Sans CJK SC","PingFang SC","Microsoft YaHei",sans-serif;margin:0;background:#f4f5f7;color:#1d2129}
main{max-width:640px;margin:24px auto;background:#fff;border:1px solid #d9dce1;border-radius:8px;padding:24px 28px}
h1{font-size:22px;margin:0 0 4px}
.en{display:block;color:#5c6370;font-size:.85em;font-weight:normal}
dl{display:grid;grid-template-columns:max-content 1fr;gap:8px 16px;margin:20px 0}
dt{color:#4e5969}
dd{margin:0;font-weight:600;overflow-wrap:anywhere}
.origin{font-size:1.15em;color:#b42318}
.digest{font-family:ui-monospace,monospace;font-weight:normal;font-size:.9em}
.note{background:#fff7e6;border:1px solid #f5c26b;border-radius:6px;padding:10px 14px}
.ok{background:#ecfdf3;border-color:#6ce9a6}
.bad{background:#fef3f2;border-color:#fda29b}
form{display:flex;gap:12px;margin-top:20px}
button{font:inherit;padding:10px 18px;border-radius:6px;border:1px solid #c9cdd4;background:#fff;cursor:pointer}
button.sign{background:#1d4ed8;border-color:#1d4ed8;color:#fff}
"""


def clean(text: str) -> str:
    """Site-stated text fit to show: no control, format (bidi override, zero-width) or unassigned characters."""
    return "".join(" " if unicodedata.category(c) in ("Cc", "Cf", "Cn", "Co", "Cs", "Zl", "Zp") else c for c in text).strip()


def _both(zh: str, en: str) -> str:
    return f'{html.escape(zh)}<span class="en" lang="en">{html.escape(en)}</span>'


def _row(zh: str, en: str, value: str, css: str = "") -> str:
    return f'<dt>{_both(zh, en)}</dt><dd class="{css}">{value}</dd>'


def _grouped(hexdigest: str) -> str:
    return " ".join(hexdigest[i : i + 8] for i in range(0, len(hexdigest), 8))


def _document(zh: str, en: str, body: str, nonce: str, status: int = 200) -> tuple[str, int, str]:
    page = (
        '<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>hallmark-key · {html.escape(zh)} / {html.escape(en)}</title>"
        f'<style nonce="{nonce}">{STYLE}</style></head>'
        f"<body><main><h1>{_both(zh, en)}</h1>{body}</main></body></html>"
    )
    return page, status, nonce


def request_page(request: SigningRequest, now: float, state: str | None = None) -> tuple[str, int, str]:
    """The page for one request: its details and, while it waits, the two buttons. (html, status, style nonce)."""
    nonce = secrets.token_urlsafe(16)
    state = state or request.state
    rows = [_row("请求网站", "Site asking", html.escape(request.origin), "origin")]
    if request.purpose == "login":
        rows.append(_row("用途", "Purpose", _both("用 USB Key 登录该网站", "Log in to this site with the USB key")))
    else:
        unnamed = _both("（网站未说明）", "(not stated by the site)")
        name = html.escape(clean(request.document_name)) if request.document_name else unnamed
        pages = html.escape(str(request.document_pages)) if request.document_pages is not None else unnamed
        rows += [
            _row("用途", "Purpose", _both("签署文件", "Sign a document")),
            _row("文件名称", "Document", name),
            _row("页数", "Pages", pages),
            _row("文件摘要 SHA-256", "Document digest (SHA-256)", html.escape(_grouped(request.digest)), "digest"),
        ]
    rows.append(_row("签名证书", "Certificate", html.escape(request.certificate_subject)))
    details = f"<dl>{''.join(rows)}</dl>"
    if state == "pending" and now < request.expires:
        left = request.seconds_left(now)
        if request.purpose == "document":
            note = _both(
                "文件名称和页数由请求网站提供；签名覆盖的是上面的文件摘要。",
                "The name and page count are as the site states them; the signature covers the digest above.",
            )
            details += f'<p class="note">{note}</p>'
        warning = _both(
            f"只有在您本人刚刚在 {request.origin} 上发起此操作时才确认。此请求将在 {left} 秒后失效。",
            f"Confirm only if you have just started this on {request.origin} yourself. This request expires in {left} seconds.",
        )
        body = (
            f"<p>{_both('有网站请求使用您的 USB Key 签名，请核对：', 'A site asks to sign with your USB key. Check:')}</p>"
            f"{details}<p>{warning}</p>"
            f'<form method="post" action="/confirm/{html.escape(request.id)}">'
            f'<input type="hidden" name="csrf_token" value="{html.escape(request.csrf)}">'
            f'<button class="sign" type="submit" name="decision" value="approve">确认签名 <span lang="en">Sign</span></button>'
            f'<button type="submit" name="decision" value="deny">拒绝 <span lang="en">Deny</span></button>'
            "</form>"
        )
        return _document("确认签名请求", "Confirm a signing request", body, nonce)
    outcome = {
        "signed": ("ok", "已签名。请回到请求网站；此窗口可以关闭。", "Signed. Go back to the site; you may close this window."),
        "collected": ("ok", "已签名。请回到请求网站；此窗口可以关闭。", "Signed. Go back to the site; you may close this window."),
        "signing": ("ok", "正在签名……", "Signing..."),
        "denied": ("bad", "已拒绝，没有签名。", "Denied: nothing was signed."),
        "failed": ("bad", "USB Key 没有签名：", "The USB key did not sign: "),
        "expired": (
            "bad",
            "此请求已过期，没有签名。请回到网站重新发起。",
            "This request has expired; nothing was signed. Ask again from the site.",
        ),
    }[state if state in ("signed", "collected", "signing", "denied", "failed") else "expired"]
    css, zh, en = outcome
    if state == "failed" and request.error:
        zh, en = zh + request.error[2], en + request.error[2]
    body = f'<p class="note {css}">{_both(zh, en)}</p>{details}'
    return _document("签名请求", "Signing request", body, nonce, 200)


def message_page(status: int, zh: str, en: str) -> tuple[str, int, str]:
    """A page with one message: an unknown request, a refused confirmation."""
    nonce = secrets.token_urlsafe(16)
    body = f'<p class="note bad">{_both(zh, en)}</p>'
    return _document("签名请求", "Signing request", body, nonce, status)
