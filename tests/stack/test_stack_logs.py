"""The consoles `vmctl up` follows in the foreground: a hostile guest's bytes stay inert and bounded."""

from __future__ import annotations

from vmctl.stack.logs import MAX_LINE, follow


def test_follow_prefixes_cleans_and_bounds_lines(tmp_path):
    a, b = tmp_path / "a.log", tmp_path / "b.log"
    a.write_bytes(b"old line\n")
    b.write_bytes(b"")
    seen: list[str] = []
    rounds = iter(range(3))

    def until() -> bool:
        n = next(rounds, None)
        if n == 0:   # new output after following began; the old line is not shown again
            with open(a, "ab") as f:
                f.write(b"\x1b]0;pwned\x07\x1b[2Jclear\r\n" + b"x" * (3 * MAX_LINE) + b"\npartial")
            with open(b, "ab") as f:
                f.write(b"hello \xff\xfe\n")
        return n is None

    follow({"web": a, "db": b}, seen.append, poll=0, until=until)
    assert seen[0] == "web | ?]0;pwned??[2Jclear"
    assert seen[1].startswith("web | xxx") and len(seen[1]) <= MAX_LINE + 6
    assert seen[2] == "db  | hello \ufffd\ufffd"
    assert len(seen) == 3   # "partial" waits for its newline


def test_a_healthchecks_output_is_kept_bounded():
    from vmctl.stack.health import Tail

    sink = Tail(64)
    for _ in range(1000):
        sink.write(b"\x1b[2J" + b"y" * 4096)
    sink.write(b"last words\n")
    assert len(sink.data) == 64 and sink.text().endswith("last words")
