"""Staff console (``/admin``): one web UI for department staff over every other package, with roles.

Staff sign in through this instance's own identity provider, as a first-party
OIDC client (``admin.login``); roles are scoped to departments (``admin.roles``);
critical operations go through four eyes (``admin.proposals``, ``admin.operations``).
Only the composition root imports it.
"""
