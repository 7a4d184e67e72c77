"""Fixtures of the sync tests."""

from __future__ import annotations

import pytest

from node.station import Station


@pytest.fixture
def station(system):
    """Station V1 of the ``system`` fixture, in this process, after its first sync (catalogue)."""
    st = Station(system.stations["V1"]["settings"])
    st.sync()
    yield st
    st.store.close()
