"""People and their accounts: registration, passwords, SSO sessions, real-name proofing, enterprises and agents."""
