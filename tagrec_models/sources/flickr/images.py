"""Image files of a crawl: downloaded with retries, written atomically, hashed and decoded.

An image ends in one of two states (the ``images`` ingest table): ``ok`` (it decodes: Pillow's
``verify()`` then a full ``load()``, which catches truncation that ``verify`` alone misses) or
``broken`` with the reason (HTTP 404, not an image, truncated, too large). The bytes of a broken
image are kept when there are any, so the reason can be checked. Transient failures are not
"broken": they are retried, and when retries run out ``ImageDownloadError`` stops the crawl,
which resumes later, so an outage never ends up recorded in the data.

Pillow's ``ImageFile.LOAD_TRUNCATED_IMAGES`` must stay ``False`` (its default) for truncated
files to be caught.
"""

from __future__ import annotations

import hashlib
import io
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

import requests
from PIL import Image

from tagrec_models.sources.flickr.errors import FlickrConfigError, ImageDownloadError
from tagrec_models.sources.flickr.retry import RetryAfterTooLong, RetryPolicy, parse_retry_after
from tagrec_models.sources.tables import IMAGE_BROKEN, IMAGE_OK
from tagrec_models.storage.atomic import write_bytes

Log = Callable[[str], None]
_CHUNK = 1 << 16


@dataclass(frozen=True)
class ImageConfig:
    """Download settings. ``max_bytes`` guards against a URL that streams without end."""

    timeout_s: float = 30.0
    max_bytes: int = 50 * 1024 * 1024
    retry: RetryPolicy = RetryPolicy()

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise FlickrConfigError(f"ImageConfig.timeout_s must be > 0, got {self.timeout_s}")
        if self.max_bytes < 1:
            raise FlickrConfigError(f"ImageConfig.max_bytes must be >= 1, got {self.max_bytes}")


@dataclass(frozen=True)
class ImageResult:
    """What became of one image. ``path`` is ``None`` when no bytes were received."""

    status: str
    reason: str
    path: Path | None
    sha256: str | None
    width: int | None
    height: int | None
    n_bytes: int


def decode_check(data: bytes) -> tuple[int, int]:
    """``(width, height)`` when ``data`` is a complete image; otherwise an ``ValueError`` whose
    message says why."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
        # verify() leaves the image unusable and skips pixel data; load() decodes it all.
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return image.size
    except Exception as exc:  # Pillow raises many types (OSError, SyntaxError, struct.error...)
        raise ValueError(f"does not decode: {type(exc).__name__}: {exc}") from None


def inspect_bytes(data: bytes, path: Path | None) -> ImageResult:
    digest = hashlib.sha256(data).hexdigest()
    try:
        width, height = decode_check(data)
    except ValueError as exc:
        return ImageResult(IMAGE_BROKEN, str(exc), path, digest, None, None, len(data))
    return ImageResult(IMAGE_OK, "", path, digest, width, height, len(data))


def inspect_file(path: Path) -> ImageResult:
    """Hash and decode an image already on disk (a resumed crawl reuses what it wrote)."""
    return inspect_bytes(Path(path).read_bytes(), Path(path))


def extension_for(url: str) -> str:
    suffix = Path(urlsplit(url).path).suffix.lower()
    return suffix if suffix in {".jpg", ".jpeg", ".png", ".gif", ".webp"} else ".jpg"


class ImageFetcher:
    """Downloads one image at a time with retries (``ImageConfig.retry``); ``sleep`` is
    injected for tests. Image hosts are not the API, so no API rate limit applies."""

    def __init__(
        self,
        config: ImageConfig | None = None,
        *,
        sleep: Callable[[float], None] | None = None,
        log: Log | None = None,
        session: requests.Session | None = None,
    ) -> None:
        self.config = config or ImageConfig()
        self._sleep = sleep or time.sleep
        self._log = log or (lambda message: None)
        self._session = session or requests.Session()
        self._rng: random.Random = self.config.retry.rng()
        self.requests = 0
        self.retries = 0

    def close(self) -> None:
        self._session.close()

    def fetch(self, photo_id: str, url: str, dest: Path) -> ImageResult:
        """Download ``url`` to ``dest`` (atomically) and inspect it."""
        if urlsplit(url).scheme not in {"http", "https"}:
            return ImageResult(IMAGE_BROKEN, f"not an http(s) URL: {url!r}", None, None, None, None, 0)
        policy = self.config.retry
        reason = "no attempt made"
        for attempt in range(1, policy.max_attempts + 1):
            retry_after: float | None = None
            self.requests += 1
            try:
                with self._session.get(url, timeout=self.config.timeout_s, stream=True) as response:
                    status = response.status_code
                    if status == 200:
                        data = bytearray()
                        for chunk in response.iter_content(_CHUNK):
                            data.extend(chunk)
                            if len(data) > self.config.max_bytes:
                                return ImageResult(
                                    IMAGE_BROKEN,
                                    f"larger than max_bytes={self.config.max_bytes}",
                                    None, None, None, None, len(data),
                                )
                        write_bytes(dest, bytes(data))
                        return inspect_bytes(bytes(data), dest)
                    if status in (408, 429) or 500 <= status < 600:
                        reason = f"HTTP {status}"
                        retry_after = parse_retry_after(response.headers.get("Retry-After"))
                    else:
                        return ImageResult(IMAGE_BROKEN, f"HTTP {status}", None, None, None, None, 0)
            except requests.Timeout:
                reason = f"timed out after {self.config.timeout_s:g}s"
            except (
                requests.ConnectionError,
                requests.exceptions.ChunkedEncodingError,
                requests.exceptions.ContentDecodingError,
            ) as exc:
                # A connection cut before Content-Length bytes arrived lands here: transient.
                reason = f"connection failed ({type(exc).__name__})"
            if attempt == policy.max_attempts:
                break
            try:
                delay = policy.delay(attempt, self._rng, retry_after)
            except RetryAfterTooLong as exc:
                raise ImageDownloadError(photo_id, url, f"{reason}; {exc}") from None
            self.retries += 1
            self._log(f"image {photo_id} attempt {attempt} failed ({reason}); retrying in {delay:.1f}s")
            self._sleep(delay)
        raise ImageDownloadError(photo_id, url, f"gave up after {policy.max_attempts} attempts; last: {reason}")
