"""Fixtures for the XML model tests: libvirt's RelaxNG schema and the test profile directory."""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree

DOMAIN_RNG = Path("/usr/share/libvirt/schemas/domain.rng")


@pytest.fixture(scope="session")
def domain_rng() -> etree.RelaxNG:
    if not DOMAIN_RNG.is_file():
        pytest.fail(f"{DOMAIN_RNG} is missing (install libvirt-daemon / libvirt-clients)")
    return etree.RelaxNG(file=str(DOMAIN_RNG))


@pytest.fixture
def test_profiles(monkeypatch):
    """Point the user profile directory at tests/data/config/vmctl/profiles."""
    from golden_cases import TEST_CONFIG_HOME

    monkeypatch.setenv("XDG_CONFIG_HOME", str(TEST_CONFIG_HOME))
    return TEST_CONFIG_HOME / "vmctl" / "profiles"


@pytest.fixture
def hosted(test_profiles):
    """The hosted profile (with the test profile directory)."""
    from vmctl.profiles import load_profile

    return load_profile("hosted")


@pytest.fixture
def inputs():
    """The inputs of the golden case ``hosted-tcg-forwards``."""
    from golden_cases import CASES

    return CASES["hosted-tcg-forwards"][2]
