"""Tests of the certificate authority: issuance, CRL and OCSP, time stamps, identity and trust."""
