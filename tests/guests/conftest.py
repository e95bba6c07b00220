"""Fixtures for guest tests: one boot per guest per test session, shared by its tests."""

from __future__ import annotations

from typing import Callable

import pytest

from tests.guests.harness import GuestRun, run_guest


@pytest.fixture(scope="session")
def boot() -> Callable[[str], GuestRun]:
    """boot(name) -> the GuestRun of guests/<name>.S, booted once per session.

    A run that raises (a vtemu crash) raises again for every test that asks for it."""
    runs: dict[str, GuestRun] = {}

    def get(name: str) -> GuestRun:
        if name not in runs:
            runs[name] = run_guest(name)
        return runs[name]
    return get
