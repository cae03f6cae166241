"""Tests of the identity provider: OpenID Connect, audiences, logout, pages, people and enterprises."""
