"""Signatures per second through the key manager versus raw python-pkcs11, same token, same keys.

Creates a throwaway SoftHSM2 token, an RSA-2048 and an EC P-256 key, then signs
1 KiB messages with 1 and 2 threads, both ways, in interleaved rounds (the side
that goes first alternates), and reports medians. The last line is

    hsm-ratio rsa=<key manager / raw, 1 thread> ec=<same for EC>

Usage: python bench/hsm_sign.py [--quick] [--rounds N] [--seconds S]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, utils
from pkcs11 import Mechanism, ObjectClass

from _common import median, table
from hsm import KeyAlgorithm, PKCS11KeyManager, PKCS11URI, module, softhsm

TOKEN_LABEL = "bench"
MESSAGE = secrets.token_bytes(1024)
MAX_SIGNATURES_PER_RUN = 200_000  # a bound even if the clock misbehaves

# A "side" builds, once per thread, a function that makes one signature and a cleanup.
SignOnce = Callable[[], bytes]
Side = Callable[[], tuple[SignOnce, Callable[[], None]]]


def key_manager_side(km: PKCS11KeyManager, uri: str, is_rsa: bool) -> Side:
    def per_thread():
        signer = km.signer(uri)
        if is_rsa:
            return (lambda: signer.sign(MESSAGE, padding.PKCS1v15(), hashes.SHA256())), lambda: None
        return (lambda: signer.sign(MESSAGE, ec.ECDSA(hashes.SHA256()))), lambda: None

    return per_thread


def raw_side(token, key_id: bytes, is_rsa: bool) -> Side:
    def per_thread():
        # Own session per thread; the process is already logged in through the key manager.
        session = token.open()
        key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, id=key_id)
        if is_rsa:
            return (lambda: key.sign(MESSAGE, mechanism=Mechanism.SHA256_RSA_PKCS)), session.close

        def sign_ec():
            # SoftHSM2 2.6.1 has no CKM_ECDSA_SHA256: hash, sign raw, DER-encode r||s.
            raw = key.sign(hashlib.sha256(MESSAGE).digest(), mechanism=Mechanism.ECDSA)
            half = len(raw) // 2
            return utils.encode_dss_signature(int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big"))

        return sign_ec, session.close

    return per_thread


def signatures_per_second(side: Side, threads: int, seconds: float) -> float:
    """Run ``threads`` signing loops for about ``seconds``; total signatures / wall time."""
    prepared = [side() for _ in range(threads)]  # sessions and key lookups stay out of the timing
    counts = [0] * threads
    start_line = threading.Barrier(threads + 1)
    limit = MAX_SIGNATURES_PER_RUN // threads

    def loop(index: int, sign_once: SignOnce):
        start_line.wait()
        deadline = time.perf_counter() + seconds
        done = 0
        while done < limit and time.perf_counter() < deadline:
            sign_once()
            done += 1
        counts[index] = done

    workers = [threading.Thread(target=loop, args=(i, p[0])) for i, p in enumerate(prepared)]
    for worker in workers:
        worker.start()
    start_line.wait()
    started = time.perf_counter()
    for worker in workers:
        worker.join(timeout=seconds + 30)
    elapsed = time.perf_counter() - started
    for _, cleanup in prepared:
        cleanup()
    return sum(counts) / elapsed


def check_same_output(km_side: Side, raw: Side, public_key, is_rsa: bool) -> None:
    """Both sides must produce signatures that verify the same way, or the comparison is moot."""
    for side in (km_side, raw):
        sign_once, cleanup = side()
        signature = sign_once()
        cleanup()
        if is_rsa:
            public_key.verify(signature, MESSAGE, padding.PKCS1v15(), hashes.SHA256())
        else:
            public_key.verify(signature, MESSAGE, ec.ECDSA(hashes.SHA256()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a ~10 s smoke run (2 rounds of 0.3 s)")
    parser.add_argument("--rounds", type=int, help="rounds per cell (default 5, quick 2)")
    parser.add_argument("--seconds", type=float, help="seconds per measurement (default 1.0, quick 0.3)")
    args = parser.parse_args()
    rounds = max(1, min(args.rounds or (2 if args.quick else 5), 20))
    seconds = max(0.1, min(args.seconds or (0.3 if args.quick else 1.0), 5.0))

    module_path = softhsm.default_module()
    with tempfile.TemporaryDirectory(prefix="hsm-bench-") as tmp:
        conf = softhsm.write_config(Path(tmp))
        os.environ["SOFTHSM2_CONF"] = str(conf)  # SoftHSM2 reads it in C_Initialize, so before loading
        user_pin = f"{secrets.randbelow(10**8):08d}"
        softhsm.init_token(conf, TOKEN_LABEL, user_pin, f"{secrets.randbelow(10**8):08d}")

        km = PKCS11KeyManager(module_path, TOKEN_LABEL, user_pin)
        try:
            keys = {
                "RSA-2048": km.create_key("bench-rsa", KeyAlgorithm.RSA_2048),
                "EC P-256": km.create_key("bench-ec", KeyAlgorithm.EC_P256),
            }
            token = module.load(module_path).get_token(token_label=TOKEN_LABEL)
            sides: dict[tuple[str, str], Side] = {}
            for name, info in keys.items():
                is_rsa = name.startswith("RSA")
                sides[name, "key manager"] = key_manager_side(km, info.uri, is_rsa)
                sides[name, "raw"] = raw_side(token, PKCS11URI.parse(info.uri).id, is_rsa)
                check_same_output(sides[name, "key manager"], sides[name, "raw"], info.public_key, is_rsa)

            results = run_rounds(sides, list(keys), rounds, seconds)
        finally:
            km.close()
    report(results, list(keys), rounds, seconds)


def run_rounds(sides, key_names, rounds: int, seconds: float) -> dict[tuple[str, str, int], list[float]]:
    """Rates per (key, side, threads), one per round; key manager and raw run back to back."""
    results: dict[tuple[str, str, int], list[float]] = {}
    for warm in key_names:  # first signatures pay for session opening and caches
        for side in ("key manager", "raw"):
            signatures_per_second(sides[warm, side], 1, 0.1)
    for round_number in range(rounds):
        order = ("key manager", "raw") if round_number % 2 == 0 else ("raw", "key manager")
        cells = [(name, threads) for name in key_names for threads in (1, 2)]
        if round_number % 2:
            cells.reverse()
        for name, threads in cells:
            for side in order:
                rate = signatures_per_second(sides[name, side], threads, seconds)
                results.setdefault((name, side, threads), []).append(rate)
        print(f"round {round_number + 1}/{rounds} done", file=sys.stderr, flush=True)
    return results


def paired_ratio(results, name: str, threads: int) -> float:
    """Median over rounds of key manager / raw, each pair measured back to back."""
    km, raw = results[name, "key manager", threads], results[name, "raw", threads]
    return median(k / r for k, r in zip(km, raw))


def report(results, key_names, rounds: int, seconds: float) -> None:
    rows = []
    for name in key_names:
        for threads in (1, 2):
            km, raw = median(results[name, "key manager", threads]), median(results[name, "raw", threads])
            spread = lambda rates: f"{min(rates):.0f}-{max(rates):.0f}"  # noqa: E731
            rows.append(
                [
                    name,
                    threads,
                    f"{km:.0f}",
                    f"{raw:.0f}",
                    f"{paired_ratio(results, name, threads):.2f}",
                    spread(results[name, "key manager", threads]),
                    spread(results[name, "raw", threads]),
                ]
            )
    print(f"\nsignatures/s, median of {rounds} interleaved rounds of {seconds:g} s, 1 KiB message, cpus={os.cpu_count()}")
    print(table(["key", "threads", "key manager", "raw", "km/raw", "km range", "raw range"], rows))
    print()
    for name in key_names:
        scaling = median(results[name, "key manager", 2]) / median(results[name, "key manager", 1])
        raw_scaling = median(results[name, "raw", 2]) / median(results[name, "raw", 1])
        print(f"scaling 2 threads / 1 thread, {name}: key manager {scaling:.2f}x (raw {raw_scaling:.2f}x)")
    rsa, ec_ = (paired_ratio(results, name, 1) for name in key_names)
    print(f"hsm-ratio rsa={rsa:.2f} ec={ec_:.2f}")


if __name__ == "__main__":
    main()
