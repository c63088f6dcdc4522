"""libvirt's save-image header, read and written by vmctl (pure; the e2e tests restore real ones)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vmctl.backend import saveimage as s

XML = "<domain type='qemu'><name>c1</name><uuid>0788ecfa-ac6b-45df-8923-7940308c791d</uuid></domain>"


def test_round_trip_and_stream_alignment():
    head = s.build_header(XML)
    assert head.startswith(s.MAGIC) and len(head) % 4096 == 0
    offset, xml = s.parse_header(head + s.STREAM_MAGIC)
    assert (offset, xml) == (len(head), XML)
    version, data_len, running, fmt, cookie = struct.unpack_from("<5I", head, 16)
    assert (version, running, fmt, cookie) == (2, 1, 0, 0) and s.HEADER_SIZE + data_len == len(head)


def test_reads_what_libvirt_writes_with_a_cookie():
    data = XML.encode() + b"\0" + b"<cookie>\n  <slirpHelper/>\n</cookie>\n\0" + b"\0" * 300
    head = s.MAGIC + struct.pack("<6I", 2, len(data), 1, 0, len(XML) + 1, 0) + b"\0" * 52 + data
    assert s.parse_header(head) == (len(head), XML)


@pytest.mark.parametrize("head, message", [
    (b"LibvirtQemudPart" + b"\0" * 200, "did not finish"),
    (b"NotLibvirtAtAll!" + b"\0" * 200, "not a libvirt save image"),
    (s.MAGIC + struct.pack("<6I", 3, 10, 1, 0, 0, 0) + b"\0" * 62, "version 3"),
    (s.MAGIC + struct.pack("<6I", 2, 10, 1, 5, 0, 0) + b"\0" * 62, "compressed"),
    (s.MAGIC + struct.pack("<6I", 2, 1 << 30, 1, 0, 0, 0) + b"\0" * 62, "larger than its file"),
    (s.MAGIC + struct.pack("<6I", 2, 10, 1, 0, 0, 0) + b"\0" * 62, "without a domain XML"),
    (s.MAGIC[:10], "shorter"),
])
def test_damaged_headers_are_refused(head, message):
    with pytest.raises(s.SaveImageError, match=message):
        s.parse_header(head)


def test_stream_must_be_qemus():
    s.check_stream_start(s.STREAM_MAGIC + b"rest")
    with pytest.raises(s.SaveImageError):
        s.check_stream_start(b"QEVM\x00\x00\x00\x02")


@given(st.binary(max_size=400))
def test_any_bytes_parse_or_fail_cleanly(data):
    try:
        offset, xml = s.parse_header(s.MAGIC + data)
    except s.SaveImageError:
        return
    except UnicodeDecodeError:
        return
    assert offset <= len(data) + len(s.MAGIC) and "\0" not in xml
