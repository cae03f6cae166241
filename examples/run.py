"""Start the demo that `make run` shows: the identity provider, two halls and an approval system, on 127.0.0.1.

Prepares the demo (``hallmark demo prepare``), starts ``hallmark serve``, the
two halls of ``examples/hall`` and ``examples/approval`` (two instances of the
approval system and the payment service), prints where to go and the demo accounts, and stops
everything on Ctrl-C (or when any part exits).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


def _wait_for(url: str, process: subprocess.Popen, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"{what} stopped while starting (exit {process.returncode}); see the lines above")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    sys.exit(f"{what} did not answer at {url} within {timeout:.0f} s")


def _wait_for_port(port: int, process: subprocess.Popen, what: str, timeout: float = 30) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"{what} stopped while starting (exit {process.returncode}); see the lines above")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    sys.exit(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f} s")


def ports_needed(info: dict) -> list[tuple[str, str, int]]:
    """(what, host, port) of every server the demo starts, from ``hallmark demo prepare --json``."""
    from urllib.parse import urlsplit

    bind = info.get("bind")
    if bind:
        host, _, port = bind.rpartition(":")
        idp = (host.strip("[]") or "127.0.0.1", int(port))
    else:
        url = urlsplit(info["idp"])
        idp = (url.hostname or "127.0.0.1", url.port or 80)
    needed = [("the identity provider", *idp)]
    for hall in info["halls"].values():
        needed.append((hall["name_en"], "127.0.0.1", int(hall["port"])))
    if info.get("usb_key") and info.get("agent_port"):
        needed.append(("hallmark-key agent", "127.0.0.1", int(info["agent_port"])))
    for client_id, system in (info.get("approval") or {}).get("instances", {}).items():
        needed.append((f"approval system {client_id}", "127.0.0.1", int(system["port"])))
    if info.get("approval"):
        needed.append(("payment service", "127.0.0.1", int(info["approval"]["payment"]["port"])))
    return needed


def approval_processes(info: dict, idp: str) -> list[tuple[str, list[str], dict, str]]:
    """(what, command, environment, address to wait for) of examples/approval's processes."""
    approval = info.get("approval")
    if not approval:
        return []
    payment = approval["payment"]
    agent = f"http://127.0.0.1:{info['agent_port']}" if info.get("usb_key") and info.get("agent_port") else ""
    started = [
        (
            "payment service",
            [sys.executable, str(HERE / "approval" / "payment.py")],
            {
                "PAYMENT_CLIENT_ID": "payment-service",
                "PAYMENT_CLIENT_SECRET": payment["client_secret"],
                "PAYMENT_PORT": str(payment["port"]),
                "PAYMENT_IDP": idp,
                "PAYMENT_DEPARTMENT": approval["issuer"],
            },
            "",
        )
    ]
    for client_id, system in approval["instances"].items():
        env = {
            "APPROVAL_CLIENT_ID": client_id,
            "APPROVAL_CLIENT_SECRET": system["client_secret"],
            "APPROVAL_NAME": system["name"],
            "APPROVAL_PORT": str(system["port"]),
            "APPROVAL_IDP": idp,
            "APPROVAL_MATTER": approval["matter"],
            "APPROVAL_ISSUER": approval["issuer"],
            "APPROVAL_OFFICERS": ",".join(approval["officers"]),
            "APPROVAL_PAYMENT": payment["base"],
            "APPROVAL_AGENT": agent,
        }
        started.append(
            (f"approval system {client_id}", [sys.executable, str(HERE / "approval" / "approval.py")], env, system["base"] + "/")
        )
    return started


def event_endpoint_hosts(info: dict) -> str:
    """The approval systems receive status events over http on 127.0.0.1: the licence library must allow them."""
    systems = (info.get("approval") or {}).get("instances", {}).values()
    return " ".join(f"127.0.0.1:{system['port']}" for system in systems)


def taken_ports(needed: list[tuple[str, str, int]]) -> list[tuple[str, str, int, str]]:
    """Those of ``needed`` that cannot be bound now, with the reason (bound and let go at once, as the servers will bind).

    SO_REUSEADDR as the servers set it, so a port whose last connections are in TIME_WAIT counts as free.
    """
    import socket

    taken = []
    for what, host, port in needed:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as exc:
                taken.append((what, host, port, exc.strerror or str(exc)))
    return taken


def refuse_taken_ports(info: dict) -> None:
    """Exit with the reason when a port the demo needs is taken (before anything starts, so no banner is printed)."""
    taken = taken_ports(ports_needed(info))
    if not taken:
        return
    lines = ["make run: cannot start the demo: a port it needs is in use."]
    for what, host, port, reason in taken:
        lines.append(f"  {host}:{port} ({what}): {reason}")
    lines.append(
        "Stop the program using it (see: ss -ltnp), or move the demo with HALLMARK_BIND=127.0.0.1:PORT, "
        "HALLMARK_DEMO_HALL_PORTS=PORT,PORT, HALLMARK_DEMO_APPROVAL_PORTS=PORT,PORT,PORT and "
        "HALLMARK_CERT_AGENT_PORT=PORT."
    )
    sys.exit("\n".join(lines))


def main() -> int:
    hallmark = str(BIN / "hallmark")
    prepared = subprocess.run([hallmark, "demo", "prepare", "--json"], capture_output=True, text=True)
    if prepared.returncode != 0:
        sys.stderr.write(prepared.stderr)
        return prepared.returncode
    info = json.loads(prepared.stdout)
    idp = info["idp"].rstrip("/")
    # Another program on one of these ports would answer in place of ours and the demo would look started.
    refuse_taken_ports(info)

    children: list[tuple[str, subprocess.Popen]] = []

    def stop_all(*_):
        for _, child in reversed(children):
            if child.poll() is None:
                child.terminate()
        for _, child in children:
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()

    signal.signal(signal.SIGTERM, lambda *a: (stop_all(), sys.exit(0)))
    try:
        serve_env = dict(os.environ)
        if event_endpoint_hosts(info) and "HALLMARK_EVENT_ENDPOINT_HOSTS" not in serve_env:
            serve_env["HALLMARK_EVENT_ENDPOINT_HOSTS"] = event_endpoint_hosts(info)
        server = subprocess.Popen([hallmark, "serve"], env=serve_env)
        children.append(("identity provider", server))
        _wait_for(idp + "/healthz", server, "the identity provider")
        for client_id, hall in info["halls"].items():
            env = {
                **os.environ,
                "HALL_CLIENT_ID": client_id,
                "HALL_CLIENT_SECRET": hall["client_secret"],
                "HALL_NAME": hall["name"],
                "HALL_NAME_EN": hall["name_en"],
                "HALL_PORT": str(hall["port"]),
                "HALL_IDP": idp,
            }
            process = subprocess.Popen([sys.executable, str(HERE / "hall" / "hall.py")], env=env)
            children.append((hall["name_en"], process))
            _wait_for(hall["base"] + "/", process, hall["name_en"])
        if info.get("usb_key"):
            # The agent a USB-key user runs on their PC, here with the demo token and its PIN from agent.toml.
            agent = subprocess.Popen(
                [
                    str(BIN / "hallmark-key"),
                    "serve",
                    "--config",
                    info["usb_key"]["agent_config"],
                    "--port",
                    str(info["agent_port"]),
                    "--allow-origin",
                    idp,
                    *(
                        a
                        for system in (info.get("approval") or {}).get("instances", {}).values()
                        for a in ("--allow-origin", system["base"])
                    ),
                ]
            )
            children.append(("hallmark-key agent", agent))
            _wait_for_port(info["agent_port"], agent, "the hallmark-key agent")
        for what, command, extra, address in approval_processes(info, idp):
            process = subprocess.Popen(command, env={**os.environ, **extra})
            children.append((what, process))
            if address:
                _wait_for(address, process, what)
            else:
                _wait_for_port(int(extra["PAYMENT_PORT"]), process, what)
        print(info["banner"], flush=True)
        print("Press Ctrl-C to stop.", flush=True)
        while True:
            for what, child in children:
                if child.poll() is not None:
                    print(f"{what} exited ({child.returncode}); stopping the demo", file=sys.stderr)
                    return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        return 0
    finally:
        stop_all()


if __name__ == "__main__":
    sys.exit(main())
