"""Shared fixtures (the integration stack fixture lives in tests/integration/conftest.py)."""
