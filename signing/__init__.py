"""Trusted electronic files: department seals, USB-key signing, validation reports.

* ``seals``: seal = department-seal certificate + HSM key + image; client grants
* ``pades``: sealing PDFs at PAdES B-B / B-T / B-LT / B-LTA, with ``stamp`` (seal
  image and QR code) and ``trust`` (our TSA in-process, our OCSP/CRL for the DSS)
* ``remote``: USB-key signing (server prepares, the key signs, server finishes)
* ``report``: ETSI-style validation reports; ``documents``: the verification page's records
* ``api``, ``pages``, ``cli``, ``web``: thin HTTP, page and command layers

May import ``core``, ``hsm`` and ``ca``. See docs/signing.md.
"""
