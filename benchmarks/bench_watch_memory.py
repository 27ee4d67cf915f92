"""A busy watcher's resident memory over minutes: does it come back down after each periodic task?

    python benchmarks/bench_watch_memory.py [--duration 300] [--rate 1000] [--seed-mb 20]

`watch` (with -v, so its repack passes are logged) captures a fresh seeded database while the
writer of bench_capture.py commits at --rate; the watcher's VmRSS and VmHWM are read every
second. Printed: each change of RSS by more than 2 MB (when it happened, and the watcher's
debug lines of that second), then the last RSS, the peak (VmHWM) and the RSS at the end of each
minute. Phase 1 of bench_capture.py runs 20 s, before the periodic tasks start: a repack pass
(about every minute at 1,000 tx/s), a merge of the small index objects (every few minutes).
To compare with earlier code, put that checkout's src first on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _setup import byte_compile  # noqa: E402
from bench_capture import MULLIGAN, Mulligan, seed, start_writer  # noqa: E402


def memory(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in MB."""
    with open(f"/proc/{pid}/status") as fh:
        got = {line.split(":")[0]: int(line.split()[1]) // 1024 for line in fh if line.startswith(("VmRSS", "VmHWM"))}
    return got["VmRSS"], got["VmHWM"]


def main() -> None:
    byte_compile()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=300.0)
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--seed-mb", type=int, default=20)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-watch-memory-"))
    try:
        db = work / "app.db"
        seed(db, a.seed_mb)
        tool = Mulligan(work, db)
        tool.setup()
        logp = work / "watch.log"
        with open(logp, "w") as err:
            proc = subprocess.Popen(MULLIGAN + ["-v", "watch", "app"], cwd=work, stderr=err, stdout=subprocess.DEVNULL,
                                    env=tool.env())
            while "capturing" not in logp.read_text():
                assert proc.poll() is None, logp.read_text()
                time.sleep(0.05)
            writer, _ = start_writer(work, db, a.rate)
            t0, last, minutes, told = time.time(), 0, [], 0
            print(f"watch at {a.rate:g} tx/s for {a.duration:g} s (seed {a.seed_mb} MB)")
            while time.time() - t0 < a.duration:
                rss, hwm = memory(proc.pid)
                if abs(rss - last) > 2:
                    debug = [line[33:].strip() for line in logp.read_text().splitlines() if " DEBUG " in line]
                    said, told = debug[told:], len(debug)  # the debug lines since the last change printed
                    print(f"{time.time() - t0:6.0f} s  RSS {rss:4d} MB  peak {hwm:4d} MB  {'; '.join(said)[:110]}")
                    last = rss
                if int(time.time() - t0) // 60 > len(minutes):
                    minutes.append(rss)
                time.sleep(1.0)
            rss, hwm = memory(proc.pid)
            writer.terminate()
            writer.wait()
            proc.terminate()
            proc.wait()
        print(f"end: RSS {rss} MB, peak {hwm} MB; RSS at the end of each minute: {minutes} MB")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
