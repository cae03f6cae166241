"""The licence library's test world: an initialised instance with the demo types, departments, seals and issuers.

``licence_world`` is built once per session, in process (the services of the
instance, not a server): tests that issue licences share it. Tests that need HTTP
start a server on the same instance with ``world.serve()``.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import pytest

from core.identifiers import generate_credit_code, generate_resident_id, organisation_code_check_char
from tests.conftest import free_port, initialised_copy, pkcs11_module_for, start_server, stop_server

ACTOR = "test:licences"


def person_code(n: int) -> str:
    """A checksum-valid resident ID, different for each n below 9,000,000.

    37 is prime to 18,000, so n mod 18,000 picks the birth day and n // 18,000 the (odd) sequence number: tests that
    take their holders from separate ranges never share one."""
    born = date.fromordinal(date(1960, 1, 1).toordinal() + (37 * n) % 18000)  # born 1960-2009
    return generate_resident_id("350102", born, (2 * (n // 18000) + 1) % 1000)


def enterprise_code(n: int) -> str:
    organisation = f"T{n:07d}"
    return generate_credit_code("91350100" + organisation + organisation_code_check_char(organisation))


@dataclass
class LicenceWorld:
    instance: Path
    services: object
    base: str  # the public URL, in process and of the server serve() starts
    _server: object = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _counter: int = 0

    @property
    def ctx(self):
        return self.services["licenses"]

    def next_number(self) -> int:
        with self._lock:
            self._counter += 1
            return self._counter

    def issue(self, type_code: str, holder_code: str | None = None, holder_name: str = "测试持证人", **face_changes):
        """Issue a demo licence of ``type_code`` (a new holder unless given); returns the Licence row."""
        from licenses import demo, issuance

        n = self.next_number()
        person = demo.catalogue_kind(self.ctx, type_code) == "111"
        holder_code = holder_code or (person_code(n) if person else enterprise_code(n))
        face = {**demo.sample_face(type_code, holder_code=holder_code, holder_name=holder_name, seed=str(n)), **face_changes}
        order = issuance.Order(type_code=type_code, issuer_code=demo.issuer_for(type_code).code, holder_code=holder_code, face=face)
        return issuance.issue(self.ctx, order, actor=ACTOR, requester=ACTOR)

    def serve(self):
        """A server on this instance (started once); returns its base URL."""
        with self._lock:
            if self._server is None:
                port = int(self.base.rsplit(":", 1)[1])
                self._server = start_server(self.instance, workers=2, port=port, log=self.instance / "server.log")
            return self.base


@pytest.fixture(scope="session")
def licence_world(tmp_path_factory):
    from hallmark import components, wiring
    from licenses import demo

    instance = initialised_copy(tmp_path_factory.mktemp("licences") / "instance")
    # The tests' event subscribers listen on http://127.0.0.1, which production refuses (https, public addresses).
    # The server's periodic seal-pending job is off: the tests seal their own import runs (seal_pending(run=...)), and
    # the job sealed every other test's imported rows in the background, over a CPU of the suite's two for minutes.
    with (instance / "hallmark.toml").open("a") as settings_file:
        settings_file.write('event_endpoint_hosts = "127.0.0.1"\nseal_pending_seconds = 0\n')
    base = f"http://127.0.0.1:{free_port()}"
    # The instance's own token, through a private copy of SoftHSM2 (this process's copy serves the test token).
    module = pkcs11_module_for(instance / "softhsm" / "softhsm2.conf")
    environ = {**os.environ, "HALLMARK_PUBLIC_URL": base, "HALLMARK_PKCS11_MODULE": module}
    services = wiring.build(components.load_settings(instance, environ=environ))
    demo.prepare_catalogue(services["licenses"], actor=ACTOR)
    world = LicenceWorld(instance, services, base)
    yield world
    if world._server is not None:
        stop_server(world._server[0])
    services.close()
