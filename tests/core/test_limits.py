"""Resource limits: the values `create`/`update` take, merged and checked (pure)."""

import pytest

from vmctl.core.limits import Limits, check_limits, quota_us
from vmctl.errors import UsageError
from vmctl.units import parse_rate


def test_rates_are_sizes_per_second():
    assert parse_rate("20M/s") == 20 << 20
    assert parse_rate("512K") == 512 << 10
    assert parse_rate("1.5G/s") == 3 << 29
    for bad in ("fast", "-1M/s", "10M/min", ""):
        with pytest.raises(UsageError):
            parse_rate(bad)


def test_newer_limits_replace_only_what_they_set():
    old = Limits(cpu_shares=512, cpu_quota_percent=50)
    assert old.merged(Limits(cpu_quota_percent=25)) == Limits(cpu_shares=512, cpu_quota_percent=25)
    assert Limits.from_json(old.to_json()) == old and Limits().empty()
    assert quota_us(150) == 150_000


@pytest.mark.parametrize("limits,message", [
    (Limits(cpu_shares=1), "--cpu-shares"),
    (Limits(cpu_quota_percent=0), "--cpu-quota"),
    (Limits(memory_limit_bytes=256 << 20), "at least the guest's memory plus 64 MiB"),
    (Limits(io_weight=50), "--io-weight"),
    (Limits(io_read_bps=0), "--io-read-bps"),
])
def test_values_that_libvirt_refuses_or_that_kill_the_vm(limits, message):
    with pytest.raises(UsageError, match=message):
        check_limits(limits, memory_mib=256, cpus=1)


def test_a_limit_just_above_the_guest_is_fine():
    check_limits(Limits(memory_limit_bytes=320 << 20, cpu_quota_percent=800), memory_mib=256, cpus=1)


def test_a_host_without_io_weights_gets_the_domain_without_the_profiles_weight():
    """What vmctl.core.limits.start_domain defines again where the disks have no bfq scheduler:
    the same domain, less <blkiotune><weight> (every other tuning kept)."""
    from pathlib import Path

    from lxml import etree

    from vmctl.core.plan.edits import drop_io_weight

    xml = (Path(__file__).resolve().parent.parent / "data" / "domain" / "limits.xml").read_text()
    assert "<weight>" in xml
    blank = etree.XMLParser(remove_blank_text=True)
    out = etree.fromstring(drop_io_weight(xml).encode(), blank)
    assert out.find("blkiotune/weight") is None
    original = etree.fromstring(xml.encode(), blank)
    original.find("blkiotune").remove(original.find("blkiotune/weight"))
    if len(original.find("blkiotune")) == 0:
        original.remove(original.find("blkiotune"))
    assert etree.tostring(out) == etree.tostring(original)
