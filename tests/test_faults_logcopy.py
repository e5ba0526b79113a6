"""The bounded copy of a target's output: known-value checks through a real pipe and child."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from soaklib.observe.readers import LogScanner
from soaklib.proc.logcopy import LogCopy
from tests.test_faults_disk import _mount_tmpfs

LINE = "2026-01-01 00:00:00 [ERROR] line %06d\n"  # 40 bytes


def _run(copy: LogCopy, code: str) -> None:
    p = subprocess.Popen([sys.executable, "-c", code], stdout=copy.fileno(), stderr=subprocess.STDOUT)
    copy.start()
    assert p.wait(timeout=60) == 0


def test_a_rotated_copy_keeps_head_marker_and_tail_and_every_line_is_counted(tmp_path: Path) -> None:
    n = 20_000  # 800,000 bytes through a 64 KiB copy
    scanner = LogScanner([], r"\[ERROR\]", r"Traceback")
    copy = LogCopy(tmp_path / "target.log", 64 * 1024)
    _run(copy, f"import sys\nfor i in range({n}): sys.stdout.write({LINE!r} % i)\n")
    copy.attach(scanner.feed)  # late: what arrived before is replayed first
    st = copy.close(10)
    assert st.closed and st.bytes_total == n * 40 and scanner.bytes_fed == n * 40
    assert scanner.errors == n  # counted over everything, dropped bytes included
    text = (tmp_path / "target.log").read_text()
    assert len(text.encode()) == st.bytes_kept <= 64 * 1024
    head, marker, tail = text.partition("[soaklib] ")
    assert head.startswith(LINE % 0) and head.endswith("\n") and len(head) <= 16 * 1024
    assert tail.split("\n", 1)[1].endswith(LINE % (n - 1))  # the latest tail, whole lines
    kept_lines = head.count("[ERROR]") + tail.count("[ERROR]")
    assert st.bytes_dropped == (n - kept_lines) * 40 and st.rotations >= 5
    assert st.bytes_total - st.bytes_dropped == st.bytes_kept - len(("[soaklib] " + marker_line(tail)).encode())
    assert f"{st.bytes_dropped} bytes of the target's output dropped here" in marker + tail


def marker_line(tail: str) -> str:
    return tail.split("\n", 1)[0] + "\n"


def test_a_last_line_without_newline_is_handed_on_when_the_writer_closes(tmp_path: Path) -> None:
    scanner = LogScanner([], r"ERROR", r"Traceback \(most recent call last\)")
    copy = LogCopy(tmp_path / "target.log", 1 << 20, max_line_bytes=1000)
    copy.attach(scanner.feed)
    _run(copy, "import sys\nsys.stdout.write('x' * 2500 + ' ERROR')\n")
    copy.close(10)
    assert scanner.errors == 1 and scanner.bytes_fed == 2506  # pieces of 1000, the rest at the close


def test_a_full_disk_stops_the_copy_not_the_counting(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, 1):
        return  # no tmpfs here: the soak's disk-full test covers the stand-in
    try:
        scanner = LogScanner([], r"\[ERROR\]", r"Traceback")
        copy = LogCopy(disk / "target.log", 64 << 20)  # a limit above the disk's size
        copy.attach(scanner.feed)
        _run(copy, f"import sys\nfor i in range(100_000): sys.stdout.write({LINE!r} % i)\n")  # 4 MB
        st = copy.close(10)
        assert scanner.errors == 100_000 and st.write_error and "No space left" in st.write_error
        assert st.bytes_kept + st.bytes_dropped == st.bytes_total == 4_000_000
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True, timeout=10)
