"""Certificate authority.

Will own the HSM-backed CA hierarchy, certificate profiles, issuance from PKCS#10,
revocation, CRLs, the OCSP responder, the RFC 3161 time-stamping authority,
cross-certificates, the store of recognised external CAs, and the certificate-path
validation other packages call. May import ``core`` and ``hsm``.
"""
