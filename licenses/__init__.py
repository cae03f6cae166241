"""Electronic licence library.

Will own licence types, issuance, versions and status, holder queries,
verification and QR codes, holder authorisation, the access log, requests for
missing licences and bulk import. May import ``core``, ``hsm`` and ``signing``.
"""
