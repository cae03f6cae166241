"""Certificate status for everyone: CRLs, the OCSP responder, their publication and upkeep, the public /pki endpoints."""
