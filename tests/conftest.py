"""Shared fixtures (the integration stack fixture lives in tests/integration/conftest.py).

- ``pki`` (function): a throwaway certificate authority in ``tmp_path`` that issues server and
  client certificates (PEM files), for the TLS tests.
"""

from pathlib import Path

import pytest

from pki_support import Pki


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki")
