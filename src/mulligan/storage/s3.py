"""A vault in an S3 bucket (AWS or any S3-compatible store), through obstore.

URL: ``s3://BUCKET[/PREFIX][?endpoint=URL&region=NAME]``. Credentials, region and endpoint
come from the usual AWS environment variables (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION``, ``AWS_ENDPOINT_URL``);
the URL's ``endpoint`` and ``region`` override them. An ``http://`` endpoint is allowed
because it was asked for by name (a store on the same machine or network).

How the interface's rules hold here:
- ``put`` is one PUT request, never a multipart upload: S3 makes it atomic, and nothing
  half-uploaded is ever left in the bucket (so ``sweep`` has nothing to do).
- ``put(..., overwrite=False)`` sends ``If-None-Match: *``: the store itself refuses an
  existing key, so two writers racing for one key cannot both win. A store that does not
  support conditional writes is refused with a message saying so, not used unsafely.
- ``list`` lists the folder part of the prefix and filters the rest, sorted by key.
- S3 has been strongly consistent (read after write, list after write) since 2020.

obstore is imported when an ``s3://`` URL is opened, never at start-up.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Iterator
from urllib.parse import parse_qs, urlsplit

from ..errors import StorageError, UsageError
from .base import ObjectExists, ObjectMissing, Storage, register

# Connection errors and 5xx answers are retried with backoff (0.1 s doubling): five tries take
# about 3 s, so an unreachable store is reported in seconds, not minutes.
_RETRY = {"max_retries": 5, "retry_timeout": timedelta(seconds=30)}
_CLIENT = {"connect_timeout": "5s"}
# A request whose answer never comes (a store that hangs) ends at its timeout; reads, listings
# and deletes are then tried again while the retry window lasts, writes are not. What the
# watcher's loop waits on (listings, stats, deletes, writes up to SMALL) gets a short timeout and
# a short window, so a hung store holds the loop about 10-20 s, not minutes. Larger writes keep a
# minute to move over a slow link, and reads keep the one connection pool a restore's many
# ranged reads share (a restore is a command a person can interrupt).
TIMEOUT_SMALL = "10s"
RETRY_WINDOW_SMALL = 10.0
TIMEOUT = "60s"
SMALL = 1 << 20
_URL_OPTIONS = {"endpoint", "region"}


def parse_url(url: str) -> tuple[str, str, dict[str, str]]:
    """(bucket, prefix, options) of an s3:// URL."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise UsageError(f"not an S3 vault URL: {url!r}", hint="write it as s3://BUCKET/PREFIX")
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - _URL_OPTIONS)
    if unknown:
        raise UsageError(f"unknown option {unknown[0]!r} in the vault URL {url}",
                         hint=f"the URL takes: {', '.join(sorted(_URL_OPTIONS))}")
    options = {k: v[-1] for k, v in query.items()}
    prefix = parts.path.strip("/")
    if ".." in prefix.split("/") or "//" in parts.path.strip("/"):
        raise UsageError(f"invalid prefix in the vault URL {url}", hint="write it as s3://BUCKET/PREFIX")
    return parts.netloc, prefix, options


class S3Storage(Storage):
    read_ahead = 4  # pack parts on their way at once (each at most 256 blocks of 64 KiB, read and decompressed)

    def __init__(self, url: str):
        bucket, prefix, options = parse_url(url)
        self.url = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
        try:
            import obstore
            from obstore import exceptions as obx
            from obstore.store import S3Store
        except ImportError:  # pragma: no cover - a dependency of the package
            raise StorageError("S3 vaults need the obstore package", hint="pip install obstore") from None
        self._ob, self._x = obstore, obx
        kwargs: dict = {}
        client = dict(_CLIENT)
        if "endpoint" in options:
            kwargs["endpoint"] = options["endpoint"]
            if options["endpoint"].startswith("http://"):
                client["allow_http"] = True
        if "region" in options:
            kwargs["region"] = options["region"]
        try:
            self._store = S3Store(bucket, prefix=prefix or None, client_options={**client, "timeout": TIMEOUT},
                                  retry_config=_RETRY, **kwargs)
            self._quick = S3Store(bucket, prefix=prefix or None, client_options={**client, "timeout": TIMEOUT_SMALL},
                                  retry_config={**_RETRY, "retry_timeout": timedelta(seconds=RETRY_WINDOW_SMALL)},
                                  **kwargs)
        except Exception as exc:  # noqa: BLE001 - obstore's configuration errors have no common base
            raise StorageError(f"cannot use the vault at {self.url}: {_one_line(exc)}",
                               hint="check the URL and the AWS_* environment variables") from None

    # ---- the six methods ---------------------------------------------------------------
    def get(self, key: str) -> bytes:
        self._check_key(key)
        try:
            return bytes(self._ob.get(self._store, key).bytes())
        except FileNotFoundError:
            raise ObjectMissing(f"object {key} is missing from the vault at {self.url}") from None
        except Exception as exc:  # noqa: BLE001
            raise self._failed("read", key, exc) from None

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        self._check_key(key)
        if length <= 0:
            return b""
        try:
            return bytes(self._ob.get_range(self._store, key, start=offset, length=length))
        except FileNotFoundError:
            raise ObjectMissing(f"object {key} is missing from the vault at {self.url}") from None
        except Exception as exc:  # noqa: BLE001
            # A range past the end: give what there is, as a file read does (callers check the length).
            size = self.stat(key)
            if size is None:
                raise ObjectMissing(f"object {key} is missing from the vault at {self.url}") from None
            if offset + length > size:
                return self.get_range(key, offset, size - offset) if offset < size else b""
            raise self._failed("read", key, exc) from None

    def put(self, key: str, data: bytes, *, overwrite: bool = False) -> None:
        self._check_key(key)
        try:
            self._ob.put(self._quick if len(data) <= SMALL else self._store, key, memoryview(data),
                         mode="overwrite" if overwrite else "create", use_multipart=False)
        except (self._x.AlreadyExistsError, self._x.PreconditionError):
            # The client retries a request whose answer was lost: if its first attempt landed,
            # the retry is refused. The same bytes under the key mean this write is done.
            if self._holds(key, data):
                return
            raise ObjectExists(f"object {key} already exists") from None
        except self._x.NotSupportedError:
            raise StorageError(
                f"the store at {self.url} does not support conditional writes (If-None-Match)",
                unchanged=f"{key} was not written",
                hint="use AWS S3 or an S3-compatible store that supports conditional writes",
            ) from None
        except Exception as exc:  # noqa: BLE001
            raise self._failed("write", key, exc) from None

    def _holds(self, key: str, data: bytes) -> bool:
        if self.stat(key) != len(data):
            return False
        try:
            return self.get(key) == data
        except ObjectMissing:
            return False

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        if prefix.startswith("/") or ".." in prefix.split("/"):
            raise StorageError(f"invalid object key prefix {prefix!r}")
        folder = prefix.rpartition("/")[0]  # object stores list by path: filter the partial name here
        out = []
        try:
            for batch in self._ob.list(self._quick, prefix=folder or None, chunk_size=1000):
                for obj in batch:
                    key = obj["path"]
                    if key.startswith(prefix):
                        out.append((key, int(obj["size"])))
        except FileNotFoundError:
            return
        except Exception as exc:  # noqa: BLE001
            raise self._failed("list", prefix or "the vault", exc) from None
        out.sort()
        yield from out

    def delete(self, key: str) -> None:
        self._check_key(key)
        try:
            self._ob.delete(self._quick, key)  # idempotent: deleting a missing key succeeds
        except FileNotFoundError:
            return
        except Exception as exc:  # noqa: BLE001
            raise self._failed("delete", key, exc) from None

    def stat(self, key: str) -> int | None:
        self._check_key(key)
        try:
            return int(self._ob.head(self._quick, key)["size"])
        except FileNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001
            raise self._failed("read", key, exc) from None

    def check_writes(self) -> None:
        """Put-if-absent is what serialises the audit log and keeps two writers from taking one
        key; a store that ignores ``If-None-Match`` (some S3-compatible servers) would overwrite
        silently. Write a probe twice: the second must be refused."""
        key = f"probe/{os.urandom(8).hex()}"
        self.put(key, b"1")
        try:
            self.put(key, b"2")
        except ObjectExists:
            return
        finally:
            self.delete(key)
        raise StorageError(
            f"the store at {self.url} ignores conditional writes (If-None-Match): a second write of a key "
            "replaced the first instead of being refused",
            unchanged="no vault was created", hint="use AWS S3 or an S3-compatible store that supports conditional writes",
        )

    # ---- helpers -------------------------------------------------------------------
    @staticmethod
    def _check_key(key: str) -> None:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise StorageError(f"invalid object key {key!r}")

    def _failed(self, what: str, key: str, exc: Exception) -> StorageError:
        text = _one_line(exc)
        if "169.254.169.254" in text or "169.254.170.2" in text:
            # No credentials in the environment: obstore asked the instance metadata service.
            return StorageError(
                f"cannot {what} {key} in the vault at {self.url}: no AWS credentials found (the environment has "
                "none and no instance or container role answered)",
                hint="set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary ones)",
            )
        denied = isinstance(exc, (self._x.PermissionDeniedError, self._x.UnauthenticatedError))
        hint = ("check the credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) and the bucket's policy" if denied
                else "check that the bucket exists and the endpoint is reachable, then run the command again")
        return StorageError(f"cannot {what} {key} in the vault at {self.url}: {text}", hint=hint)


def _one_line(exc: Exception) -> str:
    """obstore's message on one line, without the nested debug dump of its causes."""
    text = " ".join(str(exc).split()).split(" Debug source:")[0].rstrip(" .")
    return text if len(text) <= 240 else text[:237] + "..."


register("s3", S3Storage)
