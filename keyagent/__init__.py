"""``hallmark-key``: the program on a user's PC that talks PKCS#11 to their USB key.

It lists what is on the key, enrols a certificate for a key made inside it, runs the
local signing agent that login and hall pages call, and signs PDFs with the key. It
is its own distribution (``keyagent/pyproject.toml``): it talks to the Hallmark server
only over HTTP and imports nothing of the server's packages, so a desktop gets
neither Flask nor SQLAlchemy.
"""
