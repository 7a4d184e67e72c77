"""Fixtures of the sync tests."""

from __future__ import annotations

import pytest

from node.station import Station


@pytest.fixture
def station(system):
    """Station V1 of the ``system`` fixture, in this process, after its first sync (catalogue)."""
    st = Station(system.stations["V1"]["settings"])
    st.store.user_by_token(system.stations["V1"]["token"])   # unlocks (node/vault.py)
    st.sync()
    yield st
    st.store.close()
