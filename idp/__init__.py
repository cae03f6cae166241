"""OpenID Connect identity provider.

Will own accounts (person, enterprise, agent), authentication levels and step-up,
real-name verification, certificate login, the SSO session, single logout, and
the registered clients (halls and approval systems). Built on Authlib. May import
``core``, ``hsm`` and ``ca``.
"""
