"""Rasters where clusters keep them: ``http(s)://`` URLs and ``s3://`` objects.

GDAL reads them through its virtual file systems (``/vsicurl/``, ``/vsis3/``), with
credentials from the usual environment. This module gives such a file the few things
the pipeline asks of a local ``Path`` — its name, its folder, its siblings (annotations
beside it), whether it exists, what the server says it is (size, ETag, Last-Modified:
the skip/resume fingerprint, nothing downloaded) — and lists ``s3://bucket/prefix/``
like a folder. An http(s) "folder" cannot be listed: give its rasters one by one or
through ``run --from-list``.

Environment (the names GDAL and the AWS tools read):
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` (``AWS_SESSION_TOKEN``, ``AWS_PROFILE``,
``AWS_REGION``) for S3; an S3-compatible server is ``AWS_S3_ENDPOINT=host:port`` (GDAL)
with ``AWS_HTTPS=NO`` for plain http and ``AWS_VIRTUAL_HOSTING=FALSE`` for path-style
addressing; listing and HEAD use ``AWS_ENDPOINT_URL`` when set, else that same endpoint.
"""

from __future__ import annotations

import errno
import io
import os
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any, Iterator, Literal

import rasterio

HTTP_SCHEMES = ("http://", "https://")
S3_SCHEME = "s3://"
VSICURL, VSIS3 = "/vsicurl/", "/vsis3/"
TIMEOUT_S = 30.0
REMOTE_FIX = "check the URL, the network and the credentials (README: Remote inputs)"
NEEDS_BOTO3 = "s3:// inputs need boto3: pip install 'survey_cracks[remote]'"
Kind = Literal["file", "folder"]


def is_remote(value: str | os.PathLike[str]) -> bool:
    """True for http(s):// URLs, s3:// URIs and GDAL's /vsicurl/ and /vsis3/ paths."""
    text = value.url if isinstance(value, RemotePath) else str(value)
    return text.startswith(HTTP_SCHEMES + (S3_SCHEME, VSICURL, VSIS3))


@dataclass(frozen=True)
class RemoteStat:
    """What the server says a file is: enough to tell a changed file without downloading it."""

    st_size: int
    etag: str | None = None
    last_modified: str | None = None


@dataclass(frozen=True)
class RemotePath:
    """A file or folder on a web server or in an S3 bucket, with the part of ``Path``'s interface the pipeline uses.

    ``str()`` is the URL (messages, manifest, reports); ``os.fspath()`` the GDAL path, so
    rasterio and pyogrio open it as they open a local file.
    """

    url: str  # http(s)://host/key or s3://bucket/key, no trailing slash
    kind: Kind | None = field(default=None, compare=False)  # known from a listing; else asked when needed

    @classmethod
    def parse(cls, value: str) -> RemotePath:
        text = str(value)
        if text.startswith(VSICURL):
            text = text[len(VSICURL):]
        elif text.startswith(VSIS3):
            text = S3_SCHEME + text[len(VSIS3):]
        folder = text.endswith("/")
        return cls(text.rstrip("/"), "folder" if folder else None)

    # ------------------------------------------------------------------ naming, like PurePath
    @property
    def is_s3(self) -> bool:
        return self.url.startswith(S3_SCHEME)

    @property
    def gdal(self) -> str:
        return VSIS3 + self.url[len(S3_SCHEME):] if self.is_s3 else VSICURL + self.url

    def __str__(self) -> str:
        return self.url

    def __fspath__(self) -> str:
        return self.gdal

    @property
    def parts(self) -> tuple[str, ...]:
        """``("s3://", bucket, *keys)`` or ``("https://", host, *path)``: the first part plays a local path's root."""
        scheme, rest = self.url.split("://", 1)
        return (f"{scheme}://", *[p for p in rest.split("/") if p])

    @property
    def name(self) -> str:
        return self.parts[-1] if len(self.parts) > 1 else ""

    @property
    def stem(self) -> str:
        return PurePosixPath(self.name).stem

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.name).suffix

    @property
    def parent(self) -> RemotePath:
        if len(self.parts) <= 2:  # the host or bucket is the root
            return self
        return RemotePath(self.url.rsplit("/", 1)[0], "folder")

    def with_name(self, name: str) -> RemotePath:
        return RemotePath(f"{self.url.rsplit('/', 1)[0]}/{name}")

    def with_suffix(self, suffix: str) -> RemotePath:
        return self.with_name(self.stem + suffix)

    def __truediv__(self, name: str) -> RemotePath:
        return RemotePath(f"{self.url}/{name}")

    def resolve(self) -> RemotePath:
        return self

    # ------------------------------------------------------------------ asking the server
    def stat(self) -> RemoteStat:
        """HEAD the file. Raises FileNotFoundError (404), PermissionError (401/403), ConnectionError or OSError."""
        return _s3_head(self) if self.is_s3 else _http_head(self.url)

    def is_file(self) -> bool:
        """Whether the server has this file; False when it says 404, raises OSError when it cannot be asked."""
        if self.kind is not None:
            return self.kind == "file"
        try:
            self.stat()
        except FileNotFoundError:
            return False
        return True

    def is_dir(self) -> bool:
        """An S3 prefix holding objects; an http(s) URL is never a folder (it cannot be listed)."""
        if self.kind is not None:
            return self.kind == "folder" and self.is_s3
        return self.is_s3 and next(iter(self._list(limit=1)), None) is not None

    def exists(self) -> bool:
        return self.is_file() or self.is_dir()

    def iterdir(self) -> Iterator[RemotePath]:
        """Objects and sub-prefixes directly under an S3 prefix, like a folder's entries."""
        if not self.is_s3:
            raise OSError(errno.ENOTDIR, "an http(s) folder cannot be listed: give its rasters (or --from-list)", self.url)
        return self._list()

    def open(self, mode: str = "rb") -> io.BytesIO:
        """The whole file in memory: for the small files read beside a raster (annotations, assets)."""
        if mode != "rb":
            raise ValueError("remote files are read-only, opened 'rb'")
        if self.is_s3:
            bucket, key = _bucket_key(self)
            with _s3_errors(self.url):
                return io.BytesIO(_s3_client().get_object(Bucket=bucket, Key=key)["Body"].read())
        with _http_errors(self.url), urllib.request.urlopen(self.url, timeout=TIMEOUT_S) as response:
            return io.BytesIO(response.read())

    def _list(self, limit: int | None = None) -> Iterator[RemotePath]:
        bucket, key = _bucket_key(self)
        prefix = f"{key}/" if key else ""
        args: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "Delimiter": "/"}
        if limit:
            args["MaxKeys"] = limit
        with _s3_errors(self.url):
            for page in _s3_client().get_paginator("list_objects_v2").paginate(**args):
                for common in page.get("CommonPrefixes", []):
                    yield RemotePath(f"{S3_SCHEME}{bucket}/{common['Prefix'].rstrip('/')}", "folder")
                for item in page.get("Contents", []):
                    if item["Key"] != prefix:  # the "folder marker" some tools write
                        yield RemotePath(f"{S3_SCHEME}{bucket}/{item['Key']}", "file")
                if limit:
                    return


Source = Path | RemotePath  # a raster, annotation or folder wherever it lives


def as_source(value: str | os.PathLike[str]) -> Source:
    """A RemotePath for URLs, s3:// URIs and /vsicurl/ or /vsis3/ paths; else a local Path."""
    if isinstance(value, (Path, RemotePath)):
        return value
    return RemotePath.parse(str(value)) if is_remote(value) else Path(value)


def open_with_rasterio(path: Source) -> rasterio.io.DatasetReader:
    """``rasterio.open``; a remote file's size and bytes are asked afresh at each open.

    GDAL keeps what it read of a remote file for the life of the process, so a long-lived
    process (a Dask worker of a standing cluster) would read yesterday's file under today's
    name. Within one open dataset GDAL's block cache still serves repeated reads.
    """
    if isinstance(path, RemotePath):
        with rasterio.Env(CPL_VSIL_CURL_NON_CACHED=f"{VSICURL}:{VSIS3}"):
            return rasterio.open(path.gdal)
    return rasterio.open(path)


def readable(path: Source) -> Path | io.BytesIO:
    """What geopandas should read: a local path, or a remote (small) vector file's bytes, fetched now
    for the reason `open_with_rasterio` gives."""
    return path.open("rb") if isinstance(path, RemotePath) else path


# ---------------------------------------------------------------------------------- http(s)


def _http_head(url: str) -> RemoteStat:
    request = urllib.request.Request(url, method="HEAD")
    with _http_errors(url), urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
        headers = response.headers
    length = headers.get("Content-Length")
    if length is None:
        raise OSError(errno.EIO, "the server gives no Content-Length for it", url)
    return RemoteStat(int(length), headers.get("ETag"), headers.get("Last-Modified"))


@contextmanager
def _http_errors(url: str) -> Iterator[None]:
    """urllib's errors as the OSError a missing or forbidden local file raises, with the server's answer."""
    try:
        yield
    except urllib.error.HTTPError as error:
        answer = f"HTTP {error.code} {error.reason}"
        if error.code == 404:
            raise FileNotFoundError(errno.ENOENT, answer, url) from None
        if error.code in (401, 403):
            raise PermissionError(errno.EACCES, answer, url) from None
        raise OSError(errno.EIO, answer, url) from None
    except urllib.error.URLError as error:
        reason = getattr(error.reason, "strerror", None) or str(error.reason)
        raise ConnectionError(errno.ECONNREFUSED, f"cannot connect: {reason}", url) from None
    except TimeoutError:
        raise ConnectionError(errno.ETIMEDOUT, f"no answer within {TIMEOUT_S:.0f} s", url) from None


# ---------------------------------------------------------------------------------- s3


def _bucket_key(path: RemotePath) -> tuple[str, str]:
    parts = path.parts
    if len(parts) < 2:
        raise OSError(errno.EINVAL, "no bucket in the URI (s3://bucket/key)", path.url)
    return parts[1], "/".join(parts[2:])


def s3_endpoint() -> str | None:
    """``AWS_ENDPOINT_URL``, else GDAL's ``AWS_S3_ENDPOINT`` (+ ``AWS_HTTPS``), else None (AWS itself)."""
    if os.environ.get("AWS_ENDPOINT_URL"):
        return os.environ["AWS_ENDPOINT_URL"]
    host = os.environ.get("AWS_S3_ENDPOINT")
    if not host:
        return None
    if "://" in host:
        return host
    scheme = "http" if os.environ.get("AWS_HTTPS", "YES").upper() in ("NO", "FALSE", "OFF", "0") else "https"
    return f"{scheme}://{host}"


def _s3_client() -> Any:
    return _s3_client_for(s3_endpoint(), os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_PROFILE"))


@lru_cache(maxsize=4)
def _s3_client_for(endpoint: str | None, _key: str | None, _profile: str | None) -> Any:
    """One client per endpoint and credentials (making one costs ~50 ms)."""
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise OSError(errno.ENOPKG, NEEDS_BOTO3, "s3://") from None
    path_style = os.environ.get("AWS_VIRTUAL_HOSTING", "TRUE").upper() in ("NO", "FALSE", "OFF", "0")
    config = Config(s3={"addressing_style": "path" if path_style else "auto"}, retries={"max_attempts": 3},
                    connect_timeout=TIMEOUT_S, read_timeout=TIMEOUT_S)
    return boto3.session.Session().client("s3", endpoint_url=endpoint, config=config)


def _s3_head(path: RemotePath) -> RemoteStat:
    bucket, key = _bucket_key(path)
    with _s3_errors(path.url):
        head = _s3_client().head_object(Bucket=bucket, Key=key)
    modified = head.get("LastModified")
    return RemoteStat(int(head["ContentLength"]), head.get("ETag"), modified.isoformat() if modified else None)


@contextmanager
def _s3_errors(url: str) -> Iterator[None]:
    """botocore's errors as the OSError a missing or forbidden local file raises."""
    try:
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
    except ImportError:
        raise OSError(errno.ENOPKG, NEEDS_BOTO3, url) from None

    try:
        yield
    except ClientError as error:
        code = str(error.response.get("Error", {}).get("Code", ""))
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        answer = f"S3 {code or status}"
        if code in ("404", "NoSuchKey", "NoSuchBucket", "NotFound"):
            raise FileNotFoundError(errno.ENOENT, answer, url) from None
        if code in ("401", "403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch") or status == 403:
            raise PermissionError(errno.EACCES, f"{answer} (access denied)", url) from None
        raise OSError(errno.EIO, answer, url) from None
    except NoCredentialsError:
        raise PermissionError(errno.EACCES, "no AWS credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)",
                              url) from None
    except BotoCoreError as error:
        raise ConnectionError(errno.ECONNREFUSED, f"cannot connect: {error}", url) from None
