"""Signatures per second through the key manager versus raw python-pkcs11, same token, same keys.

Creates a throwaway SoftHSM2 token with an RSA-2048 and an EC P-256 key, then
signs a 1 KiB message four ways per key: key manager and raw python-pkcs11, each
with 1 and 2 threads. The four run in units of back-to-back 0.1 s slices (key
manager next to raw, the order alternating), so drift and noisy neighbours hit
both sides alike; each ratio is the median over units of a ratio within a unit.
The last line is

    hsm-ratio rsa=<key manager / raw, 1 thread> ec=<same for EC>

Usage: python bench/hsm_sign.py [--quick] [--rounds N] [--seconds S]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from _common import OtherLoad, median, table
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, utils
from pkcs11 import Mechanism, ObjectClass

from hsm import PKCS11URI, KeyAlgorithm, PKCS11KeyManager, module, softhsm

TOKEN_LABEL = "bench"
MESSAGE = secrets.token_bytes(1024)
SLICE_SECONDS = 0.1  # short, so a key manager slice and its raw twin see the same noise
MAX_SIGNATURES_PER_SLICE = 100_000  # a bound even if the clock misbehaves
KM, RAW = "key manager", "raw"
VARIANTS = [(KM, 1), (RAW, 1), (KM, 2), (RAW, 2)]
EVEN_UNIT = [(KM, 1), (RAW, 1), (RAW, 2), (KM, 2)]
ODD_UNIT = [(RAW, 1), (KM, 1), (KM, 2), (RAW, 2)]

SignOnce = Callable[[], bytes]


def key_manager_signers(km: PKCS11KeyManager, uri: str, is_rsa: bool, threads: int) -> list[SignOnce]:
    # The padding and algorithm objects are made once, as a caller would keep them: they
    # cost the caller, not the key manager (ec.ECDSA() alone is ~0.8 us in cryptography 50).
    rsa_padding, ecdsa, sha256 = padding.PKCS1v15(), ec.ECDSA(hashes.SHA256()), hashes.SHA256()
    fns = []
    for _ in range(threads):
        signer = km.signer(uri)
        if is_rsa:
            fns.append(lambda s=signer: s.sign(MESSAGE, rsa_padding, sha256))
        else:
            fns.append(lambda s=signer: s.sign(MESSAGE, ecdsa))
    return fns


def raw_signers(token, key_id: bytes, is_rsa: bool, sessions: list) -> list[SignOnce]:
    """One function per session; each thread gets its own session (no login: the process has one)."""
    fns = []
    for session in sessions:
        key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, id=key_id)
        if is_rsa:
            fns.append(lambda k=key: k.sign(MESSAGE, mechanism=Mechanism.SHA256_RSA_PKCS))
        else:
            fns.append(lambda k=key: raw_ecdsa(k))
    return fns


def raw_ecdsa(key) -> bytes:
    # SoftHSM2 2.6.1 has no CKM_ECDSA_SHA256: hash here, sign raw, DER-encode r||s.
    raw = key.sign(hashlib.sha256(MESSAGE).digest(), mechanism=Mechanism.ECDSA)
    half = len(raw) // 2
    return utils.encode_dss_signature(int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big"))


def run_slice(sign_fns: list[SignOnce], seconds: float) -> tuple[int, float]:
    """Sign with one thread per function for about ``seconds``; (signatures, wall time)."""
    counts = [0] * len(sign_fns)
    start_line = threading.Barrier(len(sign_fns) + 1)
    limit = MAX_SIGNATURES_PER_SLICE // len(sign_fns)

    def loop(index: int, sign_once: SignOnce):
        start_line.wait()
        deadline = time.perf_counter() + seconds
        done = 0
        while done < limit and time.perf_counter() < deadline:
            sign_once()
            done += 1
        counts[index] = done

    workers = [threading.Thread(target=loop, args=(i, fn), daemon=True) for i, fn in enumerate(sign_fns)]
    for worker in workers:
        worker.start()
    start_line.wait()  # thread creation stays outside the timed window
    started = time.perf_counter()
    for worker in workers:
        worker.join(timeout=seconds + 30)
    return sum(counts), time.perf_counter() - started


def verify_both_sides(fns: dict, public_key, is_rsa: bool) -> None:
    """Both sides must make signatures that verify alike, or comparing their speed is moot."""
    for variant in ((KM, 1), (RAW, 1)):
        signature = fns[variant][0]()
        if is_rsa:
            public_key.verify(signature, MESSAGE, padding.PKCS1v15(), hashes.SHA256())
        else:
            public_key.verify(signature, MESSAGE, ec.ECDSA(hashes.SHA256()))


def measure(km: PKCS11KeyManager, token, keys: dict, rounds: int, seconds: float):
    """Per-slice signatures/s by (key, side, threads), and ratios between slices of the same unit."""
    units = max(2, 2 * round(seconds / (2 * SLICE_SECONDS)))  # even, so both orders run equally often
    rates: dict[tuple[str, str, int], list[float]] = {}
    ratios: dict[tuple, list[float]] = {}
    for round_number in range(rounds):
        names = list(keys) if round_number % 2 == 0 else list(reversed(keys))
        for name in names:
            info = keys[name]
            is_rsa = name.startswith("RSA")
            key_id = PKCS11URI.parse(info.uri).id
            sessions = [token.open(), token.open()]
            try:
                fns = {
                    (KM, 1): key_manager_signers(km, info.uri, is_rsa, 1),
                    (KM, 2): key_manager_signers(km, info.uri, is_rsa, 2),
                    (RAW, 1): raw_signers(token, key_id, is_rsa, sessions[:1]),
                    (RAW, 2): raw_signers(token, key_id, is_rsa, sessions),
                }
                if round_number == 0:
                    verify_both_sides(fns, info.public_key, is_rsa)
                for variant in VARIANTS:  # first signatures in a session pay for lookups and caches
                    run_slice(fns[variant], 0.02)
                for unit in range(units):
                    # One slice per variant; a key manager slice always next to its raw twin. Which
                    # goes first alternates, so every variant follows 1- and 2-thread slices equally.
                    order = EVEN_UNIT if (unit + round_number) % 2 == 0 else ODD_UNIT
                    got = {}
                    for variant in order:
                        count, elapsed = run_slice(fns[variant], SLICE_SECONDS)
                        got[variant] = count / elapsed
                        rates.setdefault((name, *variant), []).append(got[variant])
                    for threads in (1, 2):
                        ratios.setdefault((name, "km/raw", threads), []).append(got[KM, threads] / got[RAW, threads])
                    for side in (KM, RAW):
                        ratios.setdefault((name, "scaling", side), []).append(got[side, 2] / got[side, 1])
            finally:
                for session in sessions:
                    session.close()
        print(f"round {round_number + 1}/{rounds} done", file=sys.stderr, flush=True)
    return rates, ratios


def quartiles(values: list[float]) -> tuple[float, float, float]:
    q1, q2, q3 = statistics.quantiles(values, n=4) if len(values) > 1 else (values[0],) * 3
    return q1, q2, q3


def report(rates: dict, ratios: dict, key_names: list[str], rounds: int, other_cpus: float) -> None:
    rows = []
    for name in key_names:
        for threads in (1, 2):
            q1, ratio, q3 = quartiles(ratios[name, "km/raw", threads])
            km, raw = median(rates[name, KM, threads]), median(rates[name, RAW, threads])
            rows.append([name, threads, f"{km:.0f}", f"{raw:.0f}", f"{ratio:.2f}", f"{q1:.2f}-{q3:.2f}"])
    units = len(ratios[key_names[0], "km/raw", 1])
    print(
        f"\nsignatures/s, median over {units} units of back-to-back {SLICE_SECONDS:g} s slices ({rounds} rounds); "
        f"1 KiB message; {os.cpu_count()} cpus, other processes used {other_cpus:.2f} of them"
    )
    print(table(["key", "threads", "key manager", "raw", "km/raw", "km/raw IQR"], rows))
    print()
    for name in key_names:
        km, raw = median(ratios[name, "scaling", KM]), median(ratios[name, "scaling", RAW])
        print(f"scaling 2 threads / 1 thread, {name}: key manager {km:.2f}x (raw {raw:.2f}x)")
    rsa, ec_ = (median(ratios[name, "km/raw", 1]) for name in key_names)
    print(f"hsm-ratio rsa={rsa:.2f} ec={ec_:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a ~10 s smoke run")
    parser.add_argument("--rounds", type=int, help="rounds (default 7; --quick 2)")
    parser.add_argument("--seconds", type=float, help="seconds per variant per round (default 0.8; --quick 0.4)")
    args = parser.parse_args()
    rounds = max(1, min(args.rounds or (2 if args.quick else 7), 25))  # bounded whatever is asked
    seconds = max(0.1, min(args.seconds or (0.4 if args.quick else 0.8), 5.0))

    module_path = softhsm.default_module()
    with tempfile.TemporaryDirectory(prefix="hallmark-hsm-bench-") as tmp:
        conf = softhsm.write_config(Path(tmp))
        os.environ["SOFTHSM2_CONF"] = str(conf)  # SoftHSM2 reads it in C_Initialize, so before any load
        user_pin = f"{secrets.randbelow(10**8):08d}"
        softhsm.init_token(conf, TOKEN_LABEL, user_pin, f"{secrets.randbelow(10**8):08d}")
        km = PKCS11KeyManager(module_path, TOKEN_LABEL, user_pin)
        try:
            keys = {
                "RSA-2048": km.create_key("bench-rsa", KeyAlgorithm.RSA_2048),
                "EC P-256": km.create_key("bench-ec", KeyAlgorithm.EC_P256),
            }
            # The module the key manager initialised (OS locking), so raw threads are safe too.
            token = module.load(module_path).get_token(token_label=TOKEN_LABEL)
            with OtherLoad() as other:
                measured = measure(km, token, keys, rounds, seconds)
        finally:
            km.close()
    report(*measured, list(keys), rounds, other.cpus)


if __name__ == "__main__":
    main()
