"""The serial console: a pty (``vmctl console``), copied to the instance's serial.log, which
readiness and ``vmctl logs`` read; the console device points at that serial port."""

from __future__ import annotations

from vmctl.core.plan.inputs import DomainInputs
from vmctl.profiles import Profile
from vmctl.xml.domain import Console, Domain, Serial


def apply(d: Domain, p: Profile, i: DomainInputs) -> None:
    serial = Serial()
    serial.type = "pty"
    if p.console.serial_log:
        serial.log_file = i.serial_log
        serial.log_append = p.console.log_append
    serial.target_type = "isa-serial"
    serial.target_port = 0
    d.devices.add(serial)
    console = Console()
    console.type = "pty"
    console.target_type = "serial"
    console.target_port = 0
    d.devices.add(console)
