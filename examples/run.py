"""Start the demo that `make run` shows: the identity provider and two halls, on 127.0.0.1.

Prepares the demo (``hallmark demo prepare``), starts ``hallmark serve`` and the
two halls of ``examples/hall``, prints where to go and the demo accounts, and stops
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


def main() -> int:
    hallmark = str(BIN / "hallmark")
    prepared = subprocess.run([hallmark, "demo", "prepare", "--json"], capture_output=True, text=True)
    if prepared.returncode != 0:
        sys.stderr.write(prepared.stderr)
        return prepared.returncode
    info = json.loads(prepared.stdout)
    idp = info["idp"].rstrip("/")

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
        server = subprocess.Popen([hallmark, "serve"])
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
                ]
            )
            children.append(("hallmark-key agent", agent))
            _wait_for_port(info["agent_port"], agent, "the hallmark-key agent")
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
