"""Shared pytest configuration for slow tests.

``@pytest.mark.slow`` tests are skipped by default and run with ``--runslow`` or ``PHASEBAYES_SLOW=1``.
``@pytest.mark.slow(ci=True)`` marks the slow tests that fit the CI time budget (the real model at
reduced size): ``PHASEBAYES_SLOW=ci`` (set by ``.ci/run``) runs those and still skips the others.
"""

import os

import pytest


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config, items):
    setting = os.environ.get("PHASEBAYES_SLOW", "")
    if config.getoption("--runslow") or setting == "1":
        return
    for item in items:
        marker = item.get_closest_marker("slow")
        if marker is None:
            continue
        if setting == "ci" and marker.kwargs.get("ci", False):
            continue
        reason = "slow: run with --runslow or PHASEBAYES_SLOW=1"
        if marker.kwargs.get("ci", False):
            reason += " (or PHASEBAYES_SLOW=ci, as .ci/run does)"
        item.add_marker(pytest.mark.skip(reason=reason))
