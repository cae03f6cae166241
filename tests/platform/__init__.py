"""Tests of what every package shares: the app and CLI, components, settings, migrations, the web layer, the HSM, packaging, the demo."""
