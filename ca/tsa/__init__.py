"""The RFC 3161 time-stamping authority and its HTTP endpoint."""
