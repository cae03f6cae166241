"""The OpenID Connect side of the identity provider: authorization, tokens, grants, keys, consent, clients, logout."""
