"""client_credentials tokens per second: Hallmark against panva's oidc-provider.

Both servers issue the same class of token for the same request: an RFC 9068
JWT access token (``typ: at+jwt``) signed ES256, ten minutes, for a confidential
client authenticating with ``client_secret_basic`` and asking for one scope.
Neither stores anything per token.

* ours: ``hallmark serve --workers 2`` (granian) on a fresh instance made by
  ``hallmark init`` in a temp dir, the client registered by
  ``hallmark idp client add --grant client_credentials``; the key is the
  instance's ES256 key in SoftHSM2 (every token is signed inside the token).
* peer: ``bench/peers/oidc-provider/server.js``: oidc-provider (npm, version in
  its package-lock.json) in 2 processes (node:cluster), in-memory adapter, JWT
  access tokens through a resource server with ``accessTokenFormat: 'jwt'``,
  signed ES256 with a software P-256 key in process (node:crypto).
  ``--peer-format opaque`` gives it its default, opaque tokens stored in the
  in-memory adapter, for reference (a different class of token).

Before timing, one token from each side is checked: a JWT with alg ES256 and
typ at+jwt whose signature verifies against that server's published JWKS, with
sub = the client, the scope asked for and a 600 s lifetime.

Load: ``wrk -t2 -c20`` with a Lua script POSTing the same form to both
(``grant_type=client_credentials&scope=bench:read``, same client id and secret),
both on 127.0.0.1, side by side; rounds alternate which server goes first (A B,
B A, ...), after a 2 s warm-up of each. The ratio is the median of per-round
ratios. The CPU time of each server's process group during its runs is read from
/proc and shown per token (wrk shares the 2 CPUs with whichever server it loads).

Usage: python bench/token.py [--rounds N] [--seconds S] [--connections C] [--peer-format jwt|opaque] [--quick]
Last line: ``token-ratio=<ours / oidc-provider>`` (tokens/s).
"""

from __future__ import annotations

import os
import sys

if __name__ == "token":
    # Every script in bench/ has this directory first on its import path, where this
    # file's name shadows the standard library's ``token`` (imported by tokenize,
    # inspect, traceback...). Imported under that name, it hands over to the real
    # module; what follows then only defines functions (their imports are inside them).
    import importlib.util
    import sysconfig

    _spec = importlib.util.spec_from_file_location("token", os.path.join(sysconfig.get_path("stdlib"), "token.py"))
    _stdlib_token = importlib.util.module_from_spec(_spec)
    sys.modules["token"] = _stdlib_token
    _spec.loader.exec_module(_stdlib_token)

PEER_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peers", "oidc-provider")
CLIENT_ID = "bench-approvals"
SCOPE = "bench:read"
FORM = f"grant_type=client_credentials&scope={SCOPE}"
LIFETIME = 600

LUA = """wrk.method = "POST"
wrk.body = "{body}"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "{authorization}"
"""


def ensure_peer_installed() -> str:
    import shutil
    import subprocess

    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        sys.exit("node and npm are needed for the oidc-provider peer (apt-get install nodejs npm)")
    if not os.path.exists(os.path.join(PEER_DIR, "node_modules", "oidc-provider", "package.json")):
        print("installing the peer: npm ci in bench/peers/oidc-provider", file=sys.stderr, flush=True)
        done = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=PEER_DIR, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            sys.exit(f"npm ci failed:\n{done.stdout}{done.stderr}")
    return node


def peer_version() -> str:
    import json

    try:
        with open(os.path.join(PEER_DIR, "node_modules", "oidc-provider", "package.json")) as manifest:
            return json.load(manifest)["version"]
    except (OSError, ValueError, KeyError):
        return "?"


def post_token(url: str, authorization: str) -> dict:
    import json
    import urllib.request

    request = urllib.request.Request(
        url,
        data=FORM.encode(),
        method="POST",
        headers={"Content-Type": "application/x-www-form-urlencoded", "Authorization": authorization},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def get_json(url: str) -> dict:
    import json
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def check_token(name: str, base: str, token_path: str, jwks_path: str, authorization: str) -> list[str]:
    """One token from a server, checked as an RFC 9068 ES256 JWT against that server's JWKS; its claim names."""
    import json

    from joserfc import jwt
    from joserfc.jwk import KeySet

    answer = post_token(base + token_path, authorization)
    value = answer.get("access_token", "")
    if answer.get("token_type", "").lower() != "bearer" or answer.get("scope") != SCOPE or answer.get("expires_in") != LIFETIME:
        sys.exit(f"{name}: unexpected token response {json.dumps({k: v for k, v in answer.items() if k != 'access_token'})}")
    token = jwt.decode(value, KeySet.import_key_set(get_json(base + jwks_path)), algorithms=["ES256"])
    claims, header = token.claims, token.header
    if header.get("typ") != "at+jwt" or header.get("alg") != "ES256":
        sys.exit(f"{name}: header {header} is not an ES256 at+jwt")
    if (
        claims.get("sub") != CLIENT_ID
        or claims.get("client_id") != CLIENT_ID
        or claims.get("scope") != SCOPE
        or claims["exp"] - claims["iat"] != LIFETIME
    ):
        sys.exit(f"{name}: unexpected claims {claims}")
    return sorted(claims)


def main() -> None:
    import argparse
    import base64
    import json
    import signal
    import subprocess
    import tempfile
    import time
    from pathlib import Path

    from _common import OtherLoad, Server, free_port, group_cpu_seconds, median, table, venv_tool, wrk

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="wrk runs per server (default 5)")
    parser.add_argument("--seconds", type=int, default=5, help="length of each wrk run (default 5)")
    parser.add_argument("--connections", type=int, default=20, help="wrk connections (default 20, 2 threads)")
    parser.add_argument(
        "--peer-format", choices=("jwt", "opaque"), default="jwt", help="the peer's access token format (default jwt, like ours)"
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 round of 2 s")
    args = parser.parse_args()
    rounds = 1 if args.quick else max(1, min(args.rounds, 15))
    seconds = 2 if args.quick else max(1, min(args.seconds, 30))
    connections = max(2, min(args.connections, 200))

    # A SIGTERM to the benchmark must still run the finally blocks that stop the servers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    node = ensure_peer_installed()
    hallmark = venv_tool("hallmark")
    env = {k: v for k, v in os.environ.items() if k != "SOFTHSM2_CONF" and not k.startswith(("HALLMARK_", "GRANIAN_"))}

    with tempfile.TemporaryDirectory(prefix="hallmark-token-bench-") as tmp_name:
        tmp = Path(tmp_name)
        ours_env = {**env, "HALLMARK_INSTANCE": str(tmp / "instance"), "HALLMARK_LOG_LEVEL": "WARNING"}
        init = subprocess.run([hallmark, "init"], env=ours_env, capture_output=True, text=True, timeout=180)
        if init.returncode != 0:
            sys.exit(f"hallmark init failed:\n{init.stdout}{init.stderr}")
        added = subprocess.run(
            [
                hallmark,
                "idp",
                "client",
                "add",
                "--name",
                "Bench approval system",
                "--client-id",
                CLIENT_ID,
                "--grant",
                "client_credentials",
                "--scope",
                SCOPE,
                "--json",
            ],
            env=ours_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if added.returncode != 0:
            sys.exit(f"hallmark idp client add failed:\n{added.stdout}{added.stderr}")
        secret = json.loads(added.stdout)["client_secret"]
        authorization = "Basic " + base64.b64encode(f"{CLIENT_ID}:{secret}".encode()).decode()
        script = tmp / "token.lua"
        script.write_text(LUA.format(body=FORM, authorization=authorization))

        ports = {"ours": free_port(), "oidc-provider": free_port()}
        peer_env = {
            **env,
            "NODE_ENV": "production",
            "PORT": str(ports["oidc-provider"]),
            "CLIENT_ID": CLIENT_ID,
            "CLIENT_SECRET": secret,
            "SCOPE": SCOPE,
            "WORKERS": "2",
            "ACCESS_TOKEN_FORMAT": args.peer_format,
        }
        servers = {
            "ours": Server(
                "ours",
                [hallmark, "serve", "--bind", f"127.0.0.1:{ports['ours']}", "--workers", "2"],
                ports["ours"],
                env=ours_env,
                cwd=tmp_name,
                log_dir=tmp,
            ),
            "oidc-provider": Server("oidc-provider", [node, "server.js"], ports["oidc-provider"], env=peer_env, cwd=PEER_DIR, log_dir=tmp),
        }
        ready = {"ours": "/healthz", "oidc-provider": "/.well-known/openid-configuration"}
        rates: dict[str, list[float]] = {name: [] for name in servers}
        cpu_per_token: dict[str, list[float]] = {name: [] for name in servers}
        notes: list[str] = []
        try:
            for name, server in servers.items():
                server.start(ready[name])
            urls, claim_names = {}, {}
            for name in servers:
                base = f"http://127.0.0.1:{ports[name]}"
                meta = get_json(base + ready["oidc-provider"])
                token_path = meta["token_endpoint"].removeprefix(meta["issuer"])
                jwks_path = meta["jwks_uri"].removeprefix(meta["issuer"])
                urls[name] = base + token_path
                if name == "oidc-provider" and args.peer_format == "opaque":
                    post_token(urls[name], authorization)  # an opaque token: only that it is issued
                    claim_names[name] = ["(opaque)"]
                else:
                    claim_names[name] = check_token(name, base, token_path, jwks_path, authorization)
            for name in servers:  # warm up: imports, JIT, caches, first connections
                wrk(urls[name], seconds=2, connections=connections, script=str(script))
            server_cpu, started = 0.0, time.monotonic()
            with OtherLoad() as other:
                for round_number in range(rounds):
                    order = list(servers) if round_number % 2 == 0 else list(reversed(servers))
                    for name in order:
                        before = group_cpu_seconds(servers[name].proc.pid)
                        rate, note = wrk(urls[name], seconds=seconds, connections=connections, script=str(script))
                        used = group_cpu_seconds(servers[name].proc.pid) - before
                        server_cpu += used
                        rates[name].append(rate)
                        cpu_per_token[name].append(used / (rate * seconds) * 1e6 if rate else 0.0)
                        if note:
                            notes.append(f"{name} round {round_number + 1}: {note}")
                    print(
                        f"round {round_number + 1}/{rounds}: " + ", ".join(f"{n} {rates[n][-1]:.0f}/s" for n in servers),
                        file=sys.stderr,
                        flush=True,
                    )
            # OtherLoad counts only the children already reaped; the servers are still running.
            other_cpus = max(0.0, other.cpus - server_cpu / (time.monotonic() - started))
        finally:
            for server in servers.values():
                server.stop()

    ratios = [o / p for o, p in zip(rates["ours"], rates["oidc-provider"])]
    rows = [
        [
            name,
            f"{median(rates[name]):.0f}",
            f"{min(rates[name]):.0f}-{max(rates[name]):.0f}",
            f"{median(cpu_per_token[name]):.0f}",
            f"{median(ratios):.2f}" if name == "ours" else "",
        ]
        for name in servers
    ]
    print(
        f"\nclient_credentials tokens/s: median of {rounds} alternating runs of wrk -t2 -c{connections} -d{seconds}s, "
        f"2 processes per server, {os.cpu_count()} cpus, other processes used {other_cpus:.2f} of them"
    )
    print(
        f"peer: oidc-provider {peer_version()} ({args.peer_format} access tokens), node {subprocess.run([node, '--version'], capture_output=True, text=True).stdout.strip()}"
    )
    for name in servers:
        print(f"claims {name}: {' '.join(claim_names[name])}")
    print(table(["server", "tokens/s", "range", "server CPU us/token", "ours/peer"], rows))
    print("per-round ratios: " + " ".join(f"{r:.2f}" for r in ratios))
    for note in notes:
        print(f"note: {note}")
    print(f"token-ratio={median(ratios):.2f}")


if __name__ == "__main__":
    main()
