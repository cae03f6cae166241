"""Trusted electronic files.

Will own PAdES signing with HSM keys and visible department e-seals, remote
signing for USB keys (server prepares, key signs, server finishes), and
validation reports. May import ``core``, ``hsm`` and ``ca``.
"""
