"""Foundations every domain package stands on.

Settings, the database (SQLAlchemy 2 + Alembic), the hash-chained audit trail,
Chinese identifiers (GB 11643 resident IDs, GB 32100 credit codes), RFC 9457
problem+json errors and the bearer-token check for JSON APIs. Imports nothing
else of the project.
"""
