"""Fixtures of the integration tests: a real etcd per test (see tests/etcd_server.py)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from etcd_server import ETCD, EtcdServer  # noqa: E402


@pytest.fixture
def etcd(tmp_path, unique):
    """A running etcd of this test only; killed and its data removed afterwards."""
    if not Path(ETCD).exists():
        pytest.skip("etcd is not installed (apt-get install etcd-server)")
    server = EtcdServer(tmp_path / "etcd-data", f"etcd-{unique}")
    server.start()
    yield server
    server.destroy()


@pytest.fixture
def etcd_endpoint(etcd) -> str:
    """The client URL of this test's etcd, e.g. http://127.0.0.1:40123."""
    return etcd.endpoint
