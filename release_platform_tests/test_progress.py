"""Progress: plain periodic lines when the stream is not a terminal (rate and ETA from a controlled clock), a tqdm
bar on a terminal, nothing when off; items counted once per key from several threads."""

from __future__ import annotations

import io
import threading

from release_platform.progress import Progress, progress_mode


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_lines_when_not_a_terminal_with_rate_and_eta():
    out, clock = io.StringIO(), Clock()
    assert progress_mode(out) == "lines"
    with Progress("release demo 1.0.0", stream=out, interval_s=5, clock=clock) as p:
        p.plan(4, 4_000_000)
        clock.now += 2
        p("a.nwb", 500_000, 1_000_000)  # before the interval: no line
        clock.now += 3
        p.finish("a.nwb", 1_000_000)  # 5 s: 1 MB of 4 MB at 0.2 MB/s -> 15 s left
        p.finish("a.nwb", 1_000_000)  # counted once
        clock.now += 5
        p.finish("b.nwb", 1_000_000)
    lines = out.getvalue().splitlines()
    assert lines == [
        "release demo 1.0.0: 4 files, 4.0 MB",
        "release demo 1.0.0: 1/4 files, 1.0 MB/4.0 MB, 200.0 KB/s, ETA 00:15",
        "release demo 1.0.0: 2/4 files, 2.0 MB/4.0 MB, 200.0 KB/s, ETA 00:10",
        "release demo 1.0.0: done, 2 files, 2.0 MB in 00:10 (200.0 KB/s)",
    ]


def test_items_without_bytes_give_a_rate_per_minute_and_eta():
    out, clock = io.StringIO(), Clock()
    with Progress("demo", unit="partitions", stream=out, interval_s=1, clock=clock) as p:
        p.plan(7)
        clock.now += 30
        p.finish("ophys_session 1001")
    assert out.getvalue().splitlines() == ["demo: 7 partitions", "demo: 1/7 partitions, 2.0 partitions/min, ETA 03:00",
                                           "demo: done, 1 partitions in 00:30"]


def test_bar_on_a_terminal_and_nothing_when_off(monkeypatch):
    tty = Tty()
    monkeypatch.delenv("RELEASE_PLATFORM_PROGRESS", raising=False)
    assert progress_mode(tty) == "bar"
    with Progress("verify", stream=tty) as p:
        p.plan(2, 2048)
        p.finish("x", 1024)
        p.finish("y", 1024)
    text = tty.getvalue()
    assert "verify" in text and "100%" in text and "2/2 files" in text
    off = io.StringIO()
    with Progress("verify", stream=off, mode="off") as p:
        p.plan(1, 10)
        p.finish("x", 10)
    assert off.getvalue() == ""
    monkeypatch.setenv("RELEASE_PLATFORM_PROGRESS", "lines")
    assert progress_mode(tty) == "lines"


def test_threads_count_each_file_once():
    out = io.StringIO()
    p = Progress("copy", stream=out, interval_s=1e9)
    p.plan(400, 400 * 10)

    def work(offset):
        for i in range(100):
            for done in (5, 10):
                p(f"f{offset + i}", done, 10)
            p.finish(f"f{offset + i}", 10)

    threads = [threading.Thread(target=work, args=(k * 100,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    p.close()
    assert p.items == 400 and p.bytes_done == 4000
    assert out.getvalue().splitlines()[-1].startswith("copy: done, 400 files, 4.0 KB in ")
