"""What every backup test gets: no gpg-agent left behind."""

from __future__ import annotations

import pytest

from realparts.gpg import agent_homes_below, stop_agent


@pytest.fixture(autouse=True)
def _stop_the_gpg_agents_a_test_leaves(tmp_path):
    """A test that kills hub-backup with -9 (or runs duplicity itself) leaves the gpg-agent of
    that GnuPG home running, as it would on a host; stop every agent serving a home below the
    test's directory once the test is over."""
    yield
    for home in agent_homes_below(tmp_path):
        stop_agent(home)
