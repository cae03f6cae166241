"""The privacy notice, by version: Chinese first, English second.

A new version is added here (never an old one edited: what a person accepted
stays readable) and put in force with the ``idp.privacy_version`` setting; every
resident who accepted an older one is asked again at their next login.
"""

from __future__ import annotations

NOTICES: dict[str, dict[str, tuple[str, ...]]] = {
    "2026-12": {
        "zh": (
            "本平台是全省网上办事大厅的统一身份认证服务，由省政务服务数据管理部门运营。",
            "我们收集的信息：您注册时填写的手机号码或用户名、显示名称；实名认证时的姓名和公民身份号码"
            "（号码只保存带密钥的摘要和打码后的形式）；登录记录（时间、IP 地址、设备、认证等级）；"
            "您使用数字证书登录时的证书信息。我们不保存您的密码，只保存其不可逆的摘要。",
            "我们如何使用：只用于确认您的身份、让您一次登录即可办理各个大厅的事项、保障账号安全，"
            "以及依法留存审计记录。办事大厅只能得到您同意提供的信息（如实名认证结果），您可以随时在“我使用过的大厅”中撤回。",
            "您的权利：您可以随时下载您的账号数据（JSON 格式），撤回对某个大厅的授权，或申请注销账号。"
            "注销申请有冷静期，期间登录即可撤销；冷静期满后账号停用，记录按档案留存规定保存期满后删除。",
            "如有疑问，请拨打服务热线。",
        ),
        "en": (
            "This is the unified identity service of the province's online service halls, run by the provincial "
            "government service data authority.",
            "What we collect: the mobile number or username and display name you register with; for real-name "
            "verification, your name and resident ID number (the number only as a keyed digest and a masked form); "
            "your sign-in history (time, IP address, device, level); the certificates you sign in with. We never keep "
            "your password, only a one-way digest of it.",
            "How we use it: only to confirm who you are, to let one sign-in serve every hall, to keep your account "
            "safe, and to keep the audit records the law requires. A hall gets only what you agreed to give it (such "
            "as whether your real name is verified), and you can take that back at any time under 'Halls I have used'.",
            "Your rights: you can download your account data (JSON) at any time, withdraw a hall's access, or ask for "
            "your account to be closed. A closure has a cooling-off period in which signing in cancels it; after it "
            "the account is disabled and its records are kept for the period the records rules require, then deleted.",
            "Questions: call the service hotline.",
        ),
    },
}


def text(version: str, lang: str) -> tuple[str, ...]:
    """The notice's paragraphs in ``lang`` (Chinese when there is no such language)."""
    notice = NOTICES[version]
    return notice.get(lang) or notice["zh"]
