"""Tests of trusted electronic files: sealing, remote signing, validation, their pages."""
