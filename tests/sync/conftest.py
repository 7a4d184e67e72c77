"""Fixtures of the sync tests."""

from __future__ import annotations

import pytest

from node.station import Station
from node.store import TOKEN_ENV


@pytest.fixture
def station(system, monkeypatch):
    """Station V1 of the ``system`` fixture, in this process, after its first sync (catalogue); the
    command line the tests run gets its token to unlock it (node/vault.py)."""
    monkeypatch.setenv(TOKEN_ENV, system.stations["V1"]["token"])
    st = Station(system.stations["V1"]["settings"])
    st.store.user_by_token(system.stations["V1"]["token"])   # unlocks (node/vault.py)
    st.sync()
    yield st
    st.store.close()
