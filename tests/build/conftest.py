"""Fixtures for build tests. ``tiny_build`` (session): the ``tiny`` image built from a clean image
cache, with Debian packages cached in ``$VMCTL_TEST_CACHE`` or ~/.cache/vmctl-test."""

from vmctl.build.testing import tiny_build  # noqa: F401
