"""Leases that keep prune from deleting data a running writer may still reference.

Every writer (snapshot, capture) stores a lease ``locks/<id>`` before it loads
the index, refreshes it while it runs, and deletes it at the end. Prune stores
its own exclusive lease, then looks for live writer leases: if it finds one it
removes no data this time. A writer that finds a live prune lease waits for it.
Both write before they look, so at least one of them sees the other. A lease
whose heartbeat is older than ``STALE_AFTER`` belongs to a crashed process and
is ignored.

A long-lived writer (``watch``) does not make every prune wait forever: when it
sees a prune lease it stores everything it has, marks its lease *yielded* (it
references nothing it has not stored, and deduplicates against nothing until the
prune is over), and prune waits a few seconds for that before it decides to defer.
Afterwards the writer forgets its cached index and stores again whatever pages
are missing.
"""

from __future__ import annotations

import json
import os
import threading
import time

from ..errors import StorageError
from ..runtime import hostname
from ..storage import Storage

STALE_AFTER = 120.0
HEARTBEAT = 30.0
# A heartbeat gap this long may have made others take the lease for dead (a prune may then
# have removed data): the holder is told through ``Lease.lapses``.
LAPSE_AFTER = STALE_AFTER * 0.75


class Lease:
    def __init__(self, storage: Storage, kind: str, purpose: str):
        self.storage = storage
        self.kind = kind  # "writer" | "prune"
        self.purpose = purpose
        self.id = f"{kind}-{os.urandom(6).hex()}"
        self.key = f"locks/{self.id}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.renewed = 0.0  # when the lease was last stored (monotonic: a gap in our own heartbeats)
        self.lapses = 0  # heartbeats that landed after a gap of LAPSE_AFTER or more
        self.yielded = False  # the holder stored everything and waits for a prune
        self.since = time.time()  # when it was first taken (the older of two rival holders keeps it)

    def _body(self) -> bytes:
        return json.dumps(
            {"kind": self.kind, "purpose": self.purpose, "host": hostname(), "pid": os.getpid(),
             "heartbeat": time.time(), "yielded": self.yielded, "since": self.since}
        ).encode()

    def set_yielded(self, flag: bool) -> None:
        """Say (now, not at the next heartbeat) whether this writer has stepped aside for a prune."""
        self.yielded = flag
        self.storage.put(self.key, self._body(), overwrite=True)
        self.renewed = time.monotonic()

    def acquire(self) -> "Lease":
        if self._thread is not None:  # already held (writer_lease acquires, then `with` enters)
            return self
        self.storage.put(self.key, self._body(), overwrite=True)
        self.renewed = time.monotonic()
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT):
            try:
                self.storage.put(self.key, self._body(), overwrite=True)
                now = time.monotonic()
                if now - self.renewed >= LAPSE_AFTER:
                    self.lapses += 1  # the vault was unreachable, or this process was paused
                self.renewed = now
                if self._stop.is_set():
                    # release() ran while this put was in flight and may have deleted the lease
                    # before it landed: do not leave it looking live for STALE_AFTER.
                    self.storage.delete(self.key)
            except Exception:
                pass

    def lapsed(self) -> bool:
        """Is the lease overdue now (others may soon, or already, take it for dead)?"""
        return time.monotonic() - self.renewed >= LAPSE_AFTER

    def release(self) -> None:
        self._stop.set()
        try:
            self.storage.delete(self.key)
        except Exception:
            pass
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)

    def __enter__(self) -> "Lease":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def live_leases(storage: Storage, kind: str, exclude: str | None = None) -> list[dict]:
    out = []
    now = time.time()
    for key, _ in storage.list(f"locks/{kind}-"):  # lease ids start with their kind
        if key == exclude:
            continue
        try:
            body = json.loads(storage.get(key))
        except Exception:
            continue
        if body.get("kind") == kind and now - body.get("heartbeat", 0) < STALE_AFTER:
            body["key"] = key
            out.append(body)
    return out


def remove_dead_leases(storage: Storage, older_than: float = STALE_AFTER * 5) -> int:
    """Delete the lease objects of processes that died holding them (killed before they could
    delete their own): heartbeat older than ``older_than`` s, long past ``STALE_AFTER``, so
    nobody takes them for live. A holder that was only paused stores its lease again at its
    next heartbeat and learns of the gap through ``Lease.lapses``. Returns how many."""
    now, removed = time.time(), 0
    for key, _ in storage.list("locks/"):
        try:
            body = json.loads(storage.get(key))
            heartbeat = float(body["heartbeat"])
        except Exception:
            continue  # unreadable: not ours to judge
        if now - heartbeat >= older_than:
            storage.delete(key)
            removed += 1
    return removed


def busy_writers(storage: Storage, wait: float = 0.0) -> list[dict]:
    """Live writer leases that have not yielded, after waiting up to ``wait`` s for them to."""
    deadline = time.monotonic() + wait
    while True:
        busy = [w for w in live_leases(storage, "writer") if not w.get("yielded")]
        if not busy or time.monotonic() >= deadline:
            return busy
        time.sleep(0.2)


def writer_lease(storage: Storage, purpose: str, wait: float = 600.0,
                 stop: threading.Event | None = None) -> Lease:
    """Take a writer lease, waiting while a prune removes data.

    Going on while a prune still holds its lease could deduplicate against a pack it is
    deleting, so a wait that runs out is an error, never a licence. ``stop`` (set by a
    signal handler) ends the wait early; the caller then does no work."""
    lease = Lease(storage, "writer", purpose).acquire()
    try:
        deadline = time.monotonic() + wait
        while live_leases(storage, "prune"):
            if stop is not None and stop.is_set():
                break
            if time.monotonic() >= deadline:
                raise StorageError(
                    f"a prune of the vault at {storage.url} has been removing data for more than {wait:.0f} s",
                    unchanged="nothing was written",
                    hint="wait for the prune to finish (a crashed prune's lease expires after "
                         f"{STALE_AFTER:.0f} s), then run the command again",
                )
            time.sleep(0.2)
    except BaseException:
        lease.release()
        raise
    return lease
