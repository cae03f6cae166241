"""The composition root: app factory, CLI, serving and the wiring between packages.

Nothing imports this package.
"""
