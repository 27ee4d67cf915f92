"""Page hashing beside another thread: why reading, compressing and storing threads work in
few long calls (docs/design.md, "Threads and the GIL").

    python benchmarks/bench_gil.py [--pages 25000]

BLAKE3 (the `blake3` package) lets go of the GIL on every input of 2 KiB or more, so each
4 KiB page hashed is a point where another thread may take the GIL. Prints the time to hash
the same pages alone, beside a thread decompressing 64 KiB blocks one call a block, beside
one decompressing them 256 blocks a call (what a restore does), and beside a thread running
pure Python (on a tenth of the pages: it is that slow).
"""

from __future__ import annotations

import argparse
import os
import threading
import time

import blake3
import zstandard


def hash_pages(pages: list[bytes]) -> float:
    t = time.perf_counter()
    for p in pages:
        blake3.blake3(p).digest(length=16)
    return time.perf_counter() - t


def beside(work, pages: list[bytes]) -> float:
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            work()

    th = threading.Thread(target=loop, daemon=True)
    th.start()
    time.sleep(0.05)
    try:
        return hash_pages(pages)
    finally:
        stop.set()
        th.join()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pages", type=int, default=25000)
    a, _ = ap.parse_known_args()  # run_all.py passes every benchmark the same arguments
    pages = [os.urandom(4096) for _ in range(a.pages)]
    blocks = zstandard.ZstdCompressor().multi_compress_to_buffer(
        [os.urandom(2048) * 32 for _ in range(256)], threads=1)
    frames = [blocks[i].tobytes() for i in range(len(blocks))]
    dctx = zstandard.ZstdDecompressor()
    ctx2 = zstandard.ZstdDecompressor()

    def block_by_block():
        for f in frames:
            dctx.decompress(f)

    def one_call():
        ctx2.multi_decompress_to_buffer(frames, threads=1)

    def pure_python():
        sum(range(1000))

    alone = hash_pages(pages)
    rows = [
        ("alone", alone, a.pages),
        ("beside decompressing one call a block", beside(block_by_block, pages), a.pages),
        ("beside decompressing 256 blocks a call", beside(one_call, pages), a.pages),
        ("beside pure Python", beside(pure_python, pages[: a.pages // 10]), a.pages // 10),
    ]
    print(f"{'hashing 4 KiB pages':42} {'pages':>7} {'seconds':>8} {'us/page':>8} {'vs alone':>9}")
    for label, secs, n in rows:
        per = secs / n * 1e6
        print(f"{label:42} {n:>7} {secs:>8.3f} {per:>8.2f} {per / (alone / a.pages * 1e6):>8.1f}x")


if __name__ == "__main__":
    main()
