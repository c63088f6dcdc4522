"""Fixtures for build tests. ``tiny_build`` / ``tiny_bios_build`` (session): the ``tiny`` and
``tiny-bios`` images built from a clean image cache, with Debian packages cached in
``$VMCTL_TEST_CACHE`` or ~/.cache/vmctl-test."""

from vmctl.build.testing import tiny_bios_build, tiny_build  # noqa: F401
