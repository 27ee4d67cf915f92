"""Work shared out between processes: a restore's pages checked and written on more than one core.

A restore spends its time in Python, a few microseconds a page (find the page in its block,
hash it, compare, hand it to the writer): one thread holds the interpreter for all of it, and
threads would only take turns. ``fan_out`` runs its first job in this process and each other
one in a child made with ``fork``, so the children start at once with everything the parent
looked up (the index, where every page is) and nothing to import or read again.

The rules that keep that safe:

- Only on Linux, and only where the caller says its work is safe in a child (a local vault:
  an object store's client keeps threads and connections that do not survive a fork).
- Thread pools made before the fork are forgotten in the child (``os.register_at_fork`` in
  vault/workers.py and fsio.py): a child makes its own.
- A child reports over a pipe: pages done, then done or the error it met (a
  :class:`MulliganError` goes across whole, as its class name and fields; an ``OSError`` as
  its errno and text, for the caller to report as it would its own). It ends with
  ``os._exit``: nothing of the parent's (buffers, ``atexit``, open databases) runs twice.
- A child dies with its parent (``PR_SET_PDEATHSIG``) and leaves ^C to it; a parent whose own
  job fails, or that is interrupted, kills its children before it cleans up.
- A child that dies without saying why (the OOM killer) is an error: its pages were not
  written. A fork that fails (a process limit) leaves that job to the parent.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys
import traceback
import warnings
from typing import Callable

from . import errors
from .errors import MulliganError, StorageError

Job = Callable[[Callable[[int], None]], None]
"""Work for one process: called with ``report(n)``, to say n more items are done."""

_PR_SET_PDEATHSIG = 1


def cpus() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def can_fork() -> bool:
    return sys.platform.startswith("linux") and hasattr(os, "fork")


def fan_out(jobs: list[Job], progress: Callable[[int], None] | None = None) -> None:
    """Run ``jobs``: the first here, the others each in a child process, all at once. Returns when
    all are done; raises the first error any of them met, the children stopped first."""
    if len(jobs) == 1 or not can_fork():
        for job in jobs:
            job(progress or _ignore)
        return
    children: list[_Child] = []
    here = [jobs[0]]
    parent = os.getpid()
    try:
        for job in jobs[1:]:
            r, w = os.pipe()
            try:
                with warnings.catch_warnings():  # Python 3.12+ warns of any thread alive: see the rules above
                    warnings.simplefilter("ignore", DeprecationWarning)
                    pid = os.fork()
            except OSError:  # no process to be had (a limit, no memory): this one does the work
                os.close(r)
                os.close(w)
                here.append(job)
                continue
            if pid == 0:
                os.close(r)
                _run_child(job, w, parent)  # never returns
            os.close(w)
            children.append(_Child(pid, r))

        def report(n: int) -> None:
            if progress:
                progress(n)
            _listen(children, progress, wait=False)

        for job in here:
            job(report)
        while any(c.outcome is None for c in children):
            _listen(children, progress, wait=True)
    except BaseException:
        for c in children:
            if c.outcome is not True:
                c.kill()
        raise
    finally:
        for c in children:
            c.close()


class _Child:
    def __init__(self, pid: int, fd: int):
        self.pid, self.fd = pid, fd
        self.pending = b""
        self.outcome: bool | BaseException | None = None  # True: done
        self.status: int | None = None

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def reap(self) -> int | None:
        """Wait for the child to end: its exit status (negative: the signal that ended it)."""
        if self.status is None:
            try:
                self.status = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
            except ChildProcessError:
                pass
        return self.status

    def close(self) -> None:
        os.close(self.fd)
        self.reap()


def _ignore(n: int) -> None:
    pass


def _run_child(job: Job, w: int, parent: int) -> None:
    code = 0
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # ^C is the parent's to handle: it stops the children
        _die_with_parent(parent)
        unsent = [0]

        def report(n: int) -> None:
            unsent[0] += n
            if unsent[0] >= 256:
                _send(w, b"P %d\n" % unsent[0])
                unsent[0] = 0

        job(report)
        _send(w, b"P %d\nD\n" % unsent[0])
    except MulliganError as exc:
        fields = {"class": type(exc).__name__, "message": exc.message, "unchanged": exc.unchanged, "hint": exc.hint}
        _send(w, b"E " + json.dumps(fields).encode() + b"\n")
        code = 1
    except OSError as exc:  # a full disk, an I/O error: the parent turns it into its one-line error, as its own
        _send(w, b"O " + json.dumps([exc.errno, exc.strerror]).encode() + b"\n")
        code = 1
    except BaseException:  # noqa: BLE001 - the parent reports it
        _send(w, b"X " + json.dumps(traceback.format_exc().strip().splitlines()[-1]).encode() + b"\n")
        code = 2
    finally:
        os._exit(code)


def _send(w: int, data: bytes) -> None:
    while data:
        data = data[os.write(w, data):]


def _die_with_parent(parent: int) -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent was gone before the request took effect
        os._exit(3)


def _listen(children: list[_Child], progress: Callable[[int], None] | None, wait: bool) -> None:
    """Take in what the children have said (with ``wait``, wait until one says something); a
    child's error is raised here."""
    listening = {c.fd: c for c in children if c.outcome is None}
    if not listening:
        return
    ready, _, _ = select.select(list(listening), [], [], None if wait else 0)
    for fd in ready:
        c = listening[fd]
        data = os.read(fd, 65536)
        if not data:  # the child is gone without saying it was done
            c.outcome = _died(c)
            raise c.outcome
        *lines, c.pending = (c.pending + data).split(b"\n")
        for line in lines:
            kind, _, rest = line.partition(b" ")
            if kind == b"P":
                if progress:
                    progress(int(rest))
            elif kind == b"D":
                c.outcome = True
            elif kind == b"E":
                fields = json.loads(rest)
                cls = getattr(errors, fields["class"], None)
                if not (isinstance(cls, type) and issubclass(cls, MulliganError)):
                    cls = MulliganError
                c.outcome = cls(fields["message"], unchanged=fields["unchanged"], hint=fields["hint"])
                raise c.outcome
            elif kind == b"O":
                c.outcome = OSError(*json.loads(rest))
                raise c.outcome
            elif kind == b"X":
                c.outcome = RuntimeError(f"a process doing part of the work failed: {json.loads(rest)}")
                raise c.outcome


def _died(c: _Child) -> MulliganError:
    status = c.reap()
    how = (f"was killed by {signal.Signals(-status).name}" if status is not None and status < 0
           else f"exited with status {status}")
    return StorageError(f"a process writing part of the result {how} before it was done",
                        hint="run the command again (the system may have run out of memory); "
                             "with --jobs 1 all the work stays in one process")
