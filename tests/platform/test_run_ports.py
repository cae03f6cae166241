"""`make run` (examples/run.py) refuses to start, with the reason, when a port it needs is taken.

Before the fix it started anyway: a hall that could not bind its port died quietly,
another program answering on that port passed for it, and the banner with the demo
accounts was printed over a demo that did not work.
"""

from __future__ import annotations

import http.server
import importlib.util
import json
import socket
import subprocess
import sys
import threading

import pytest

from tests.conftest import ROOT, free_port, hallmark_env, initialised_copy


def _run_module():
    spec = importlib.util.spec_from_file_location("examples_run", ROOT / "examples" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _info(idp_port: int, hall_ports: tuple[int, int], agent_port: int | None = None) -> dict:
    """What ``hallmark demo prepare --json`` says, as far as ports go."""
    return {
        "bind": f"127.0.0.1:{idp_port}",
        "idp": f"http://127.0.0.1:{idp_port}",
        "halls": {f"hall-{n}": {"base": f"http://127.0.0.1:{p}", "port": p, "name_en": f"Hall {n}"} for n, p in enumerate(hall_ports)},
        "usb_key": {"agent_config": "agent.toml"} if agent_port else None,
        "agent_port": agent_port,
    }


def test_taken_ports_names_the_port_in_use_and_only_it():
    run = _run_module()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        idp, other = free_port(), free_port()
        found = run.taken_ports(run.ports_needed(_info(idp, (taken, other), agent_port=free_port())))
        assert [(what, port) for what, _, port, _ in found] == [("Hall 0", taken)]
        assert run.taken_ports(run.ports_needed(_info(idp, (other, free_port())))) == []
        with pytest.raises(SystemExit) as refused:
            run.refuse_taken_ports(_info(taken, (idp, other)))
        message = str(refused.value.code)
        assert f"127.0.0.1:{taken}" in message and "identity provider" in message and "in use" in message
        assert "HALLMARK_BIND" in message  # how to move it elsewhere
    # Without the agent (no demo USB key) its port is not needed.
    assert all(what != "hallmark-key agent" for what, *_ in run.ports_needed(_info(idp, (other, other + 1), agent_port=None)))


class _Answering(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.mark.slow
def test_make_run_refuses_when_a_hall_port_answers_for_another_program(tmp_path):
    """Another web server on a hall's port: run.py stops before starting anything, and says why."""
    instance = initialised_copy(tmp_path / "instance")
    squatter = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answering)
    threading.Thread(target=squatter.serve_forever, daemon=True).start()
    hall_port = squatter.server_address[1]
    idp_port = free_port()
    env = hallmark_env(
        instance,
        HALLMARK_BIND=f"127.0.0.1:{idp_port}",
        HALLMARK_PUBLIC_URL=f"http://127.0.0.1:{idp_port}",
        HALLMARK_DEMO_HALL_PORTS=f"{hall_port},{free_port()}",
        HALLMARK_DEMO_APPROVAL_PORTS=f"{free_port()},{free_port()},{free_port()}",
        HALLMARK_WORKERS="1",
        HALLMARK_CERT_AGENT_PORT=str(free_port()),
    )
    try:
        result = subprocess.run(
            [sys.executable, "examples/run.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180, start_new_session=True
        )
    finally:
        squatter.shutdown()
        squatter.server_close()
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Press Ctrl-C" not in output and "demo-realname" not in output, output  # no banner
    assert f"127.0.0.1:{hall_port}" in output and "in use" in output, output
    # Nothing was started: the identity provider's port stayed free.
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", idp_port)) != 0
    assert json.loads((instance / "demo.json").read_text())["halls"]  # prepare ran; only serving was refused
