"""Writing restored files: every page lands at its place, whatever the order they arrive in."""

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from mulligan import fsio

PS = 512


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 3000), st.randoms(use_true_random=False))
def test_pages_written_in_any_order_land_at_their_place(n, rnd):
    order = list(range(1, n + 1))
    # mostly ascending runs (as restores produce them), sometimes shuffled pieces
    cut = sorted(rnd.sample(range(n + 1), min(n + 1, rnd.randint(0, 8))))
    pieces = [order[a:b] for a, b in zip([0] + cut, cut + [n])]
    rnd.shuffle(pieces)
    order = [p for piece in pieces for p in piece]
    path = f"/tmp/mulligan-fsio-{os.getpid()}-{rnd.random()}"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL)
    try:
        fsio.reserve(fd, n * PS)
        w = fsio.RunWriter(fd, PS, window=1000)
        pairs = [(pgno, pgno.to_bytes(4, "little") * (PS // 4)) for pgno in order]
        for i in range(0, n, 700):  # batches of any size, against the writer's window
            w.add_many(pairs[i : i + 700])
        w.close()
        data = os.pread(fd, n * PS + 1, 0)
    finally:
        os.close(fd)
        os.unlink(path)
    assert len(data) == n * PS
    for pgno in range(1, n + 1):
        assert data[(pgno - 1) * PS : pgno * PS] == pgno.to_bytes(4, "little") * (PS // 4)


def test_a_short_pwritev_is_finished(tmp_path, monkeypatch):
    real = os.pwritev
    monkeypatch.setattr(os, "pwritev", lambda fd, bufs, off: real(fd, bufs[:1], off))
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    try:
        fsio.pwritev_all(fd, [b"a" * 10, b"b" * 10, b"c" * 5], 3)
        assert os.pread(fd, 100, 0) == b"\0" * 3 + b"a" * 10 + b"b" * 10 + b"c" * 5
    finally:
        os.close(fd)
