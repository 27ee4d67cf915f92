"""The app's users, simulated: a separate process writing to the blog until told to stop.

    python -m mulligan.demo.writer DB --log FILE --control DIR [--seed N] [--pace SECONDS]

Each action is one short transaction; after its commit a JSON line goes to the log
(time, action, table, id, user). A file ``pause`` in the control folder holds the
writers (they acknowledge with ``paused``); a file ``stop`` ends the process.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time

import apsw

from .blog import act, connect, now


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mulligan.demo.writer")
    p.add_argument("db")
    p.add_argument("--log", required=True)
    p.add_argument("--control", required=True)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--pace", type=float, default=0.02)
    a = p.parse_args(argv)
    rnd = random.Random(a.seed)
    stop, pause, paused = (os.path.join(a.control, n) for n in ("stop", "pause", "paused"))
    conn = connect(a.db)
    with open(a.log, "a", buffering=1) as log:
        while not os.path.exists(stop):
            if os.path.exists(pause):
                open(paused, "w").close()
                time.sleep(0.01)
                continue
            if os.path.exists(paused):
                os.unlink(paused)
            try:
                done = act(conn, rnd)
            except (apsw.BusyError, apsw.ConstraintError) as exc:  # the app would retry or show an error page
                done = {"action": "failed", "error": str(exc)}
            log.write(json.dumps({"time": now(), **done}) + "\n")
            time.sleep(a.pace * (0.5 + rnd.random()))
    conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
