"""The key manager when its token goes away and comes back (issue 18: faults survived).

In a process of its own with a SoftHSM2 token of its own (SoftHSM2 keeps its token list per
process, and this test reinitialises the module, which would end the sessions of every
other manager in the test process). The token's folder is moved away (a token unplugged,
an HSM unreachable) and back; the same manager object is used throughout, as a serving
worker would: TokenUnavailable while it is gone (the web layer answers that with 503),
signatures again once it is back, and a tampered ciphertext is still refused as such, never
taken for a token in trouble.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import ROOT

SCRIPT = r"""
import json, os, sys, time
from pathlib import Path
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from hsm import CiphertextInvalid, KeyAlgorithm, PKCS11KeyManager, TokenUnavailable, softhsm

folder = Path(sys.argv[1])
conf = softhsm.write_config(folder)
os.environ["SOFTHSM2_CONF"] = str(conf)
softhsm.init_token(conf, "recovery", "1234", "5678")
manager = PKCS11KeyManager(softhsm.default_module(), "recovery", "1234")
key = manager.create_key("k1", KeyAlgorithm.EC_P256)
signer = manager.signer(key.uri)
secret = manager.secret_key("wrap")
blob = manager.encrypt(secret, b"data key")
seen = {}

def attempt(what):
    try:
        what()
        return "ok"
    except TokenUnavailable:
        return "unavailable"
    except CiphertextInvalid:
        return "ciphertext_invalid"
    except Exception as exc:
        return type(exc).__name__

sign = lambda: signer.sign(b"payload", ec.ECDSA(hashes.SHA256()))
seen["before"] = attempt(sign)
seen["tampered"] = attempt(lambda: manager.decrypt(secret, blob[:-1] + bytes([blob[-1] ^ 1])))
tokens = [p for p in (folder / "tokens").iterdir() if p.is_dir()]
away = folder / "away"
tokens[0].rename(away)
seen["gone"] = attempt(sign)
time.sleep(1.1)
seen["gone_later"] = attempt(sign)
seen["status_gone"] = manager.status().ok
away.rename(tokens[0])
after = []
for _ in range(10):
    after.append(attempt(sign))
    if after[-1] == "ok":
        break
    time.sleep(0.3)
seen["back"] = after
seen["decrypt_back"] = attempt(lambda: manager.decrypt(secret, blob))
seen["status_back"] = manager.status().ok
# A worker that had not used a key when the token went away and came back: SoftHSM2 then shows no object at all
# until the module is started afresh, which must not read as "no such key" (a 500 for the rest of the worker's life).
newcomer = PKCS11KeyManager(softhsm.default_module(), "recovery", "1234")
unused = manager.create_key("k2", KeyAlgorithm.EC_P256)
newcomer.status()  # its sessions are open; it has not looked at k2
tokens[0].rename(away)
time.sleep(1.1)  # past the last restart, so the next may restart the module
sign_unused = lambda: newcomer.signer(unused.uri).sign(b"payload", ec.ECDSA(hashes.SHA256()))
seen["unused_key_gone"] = attempt(sign_unused)
away.rename(tokens[0])
time.sleep(1.1)
seen["unused_key_back"] = attempt(sign_unused)
seen["missing_key"] = attempt(lambda: newcomer.signer(unused.uri.replace("k2", "no-such-key").split(";id=")[0]))
print(json.dumps(seen))
"""


def test_token_gone_is_unavailable_and_the_same_manager_recovers(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "SOFTHSM2_CONF"}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "softhsm")], capture_output=True, text=True, timeout=120, cwd=ROOT, env=env
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["before"] == "ok"
    assert seen["tampered"] == "ciphertext_invalid"  # the operation's own failure, not the token's
    assert seen["gone"] == "unavailable" and seen["gone_later"] == "unavailable", seen
    assert seen["status_gone"] is False
    assert seen["back"][-1] == "ok" and set(seen["back"][:-1]) <= {"unavailable"}, seen
    assert seen["decrypt_back"] == "ok" and seen["status_back"] is True
    assert seen["unused_key_gone"] == "unavailable" and seen["unused_key_back"] == "ok", seen
    assert seen["missing_key"] == "KeyNotFound", seen  # a token that shows its keys: a wrong name is still a wrong name


RESTARTS_UNDER_LOAD = r"""
import json, os, sys, threading, time
from collections import Counter
from pathlib import Path
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from hsm import KeyAlgorithm, PKCS11KeyManager, TokenUnavailable, module, softhsm

folder = Path(sys.argv[1])
conf = softhsm.write_config(folder)
os.environ["SOFTHSM2_CONF"] = str(conf)
softhsm.init_token(conf, "restarts", "1234", "5678")
manager = PKCS11KeyManager(softhsm.default_module(), "restarts", "1234")
key = manager.create_key("k1", KeyAlgorithm.EC_P256)
signer = manager.signer(key.uri)
public = signer.public_key()
module.REINITIALISE_EVERY = 0.0  # every call restarts the module: the race made as likely as it can be
outcomes = Counter()
lock = threading.Lock()
stop = threading.Event()

def signing(n):
    for i in range(4000):
        if stop.is_set():
            return
        data = b"payload %d %d" % (n, i)
        try:
            signature = signer.sign(data, ec.ECDSA(hashes.SHA256()))
            public.verify(signature, data, ec.ECDSA(hashes.SHA256()))
            outcome = "ok"
        except TokenUnavailable:
            outcome = "unavailable"
        except Exception as exc:
            outcome = type(exc).__name__
        with lock:
            outcomes[outcome] += 1

threads = [threading.Thread(target=signing, args=(n,)) for n in range(4)]
for thread in threads:
    thread.start()
restarts = 0
for _ in range(40):
    time.sleep(0.01)
    restarts += manager._reinitialise()
stop.set()
for thread in threads:
    thread.join(60)
outcomes["after"] = 1 if signer.sign(b"after", ec.ECDSA(hashes.SHA256())) else 0
print(json.dumps({"outcomes": outcomes, "restarts": restarts}))
"""


def test_restarting_the_module_while_other_threads_sign_crashes_nothing(tmp_path):
    """A module restart (C_Finalize, C_Initialize) waits for the signatures in flight on other threads.

    Finalizing under them freed what they were using: SoftHSM2 crashed the process, which
    in a server is a worker and every connection it holds (seen in CI as dropped connections
    while the token was away). Here 40 restarts race four signing threads: the process
    lives, every signature made verifies, and nothing fails but as TokenUnavailable.
    """
    env = {k: v for k, v in os.environ.items() if k != "SOFTHSM2_CONF"}
    result = subprocess.run(
        [sys.executable, "-c", RESTARTS_UNDER_LOAD, str(tmp_path / "softhsm")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env,
    )
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["restarts"] == 40, seen
    assert set(seen["outcomes"]) <= {"ok", "unavailable", "after"}, seen
    assert seen["outcomes"]["ok"] > 40 and seen["outcomes"]["after"] == 1, seen
