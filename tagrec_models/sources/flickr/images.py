"""Image files of a crawl: downloaded with retries, written atomically, hashed and decoded.

An image ends in one of two states (the ``images`` ingest table): ``ok`` (it decodes: Pillow's
``verify()`` then a full ``load()``, which catches truncation that ``verify`` alone misses) or
``broken`` with the reason (HTTP 404, not an image, truncated, over ``max_bytes`` or
``max_pixels``). The bytes of a broken image are kept when there are any, so the reason can be
checked. Bodies are streamed to a temporary file and hashed from disk, never held whole. Transient failures are not
"broken": they are retried, and when retries run out ``ImageDownloadError`` stops the crawl,
which resumes later, so an outage never ends up recorded in the data.

Pillow's ``ImageFile.LOAD_TRUNCATED_IMAGES`` must stay ``False`` (its default) for truncated
files to be caught.
"""

from __future__ import annotations

import hashlib
import random
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

import requests
from PIL import Image

from tagrec_models.sources.flickr.errors import FlickrConfigError, ImageDownloadError
from tagrec_models.sources.flickr.retry import RetryAfterTooLong, RetryPolicy, parse_retry_after
from tagrec_models.sources.tables import IMAGE_BROKEN, IMAGE_OK
from tagrec_models.storage.atomic import atomic_path

Log = Callable[[str], None]
_CHUNK = 1 << 16


# The same limit as the folder and openclipart readers: anything larger is a decompression
# bomb risk for every later stage, which needs at most a few hundred pixels a side.
MAX_PIXELS = 50_000_000
# Why a broken image may be worth asking for again: its bytes arrived whole by the HTTP
# length but do not decode (a truncated or corrupted transfer). Every other broken reason
# (HTTP 404, over max_bytes or max_pixels, no URL) is the answer itself and is kept.
RETRYABLE_BROKEN_PREFIX = "does not decode"


@dataclass(frozen=True)
class ImageConfig:
    """Download settings. ``max_bytes`` guards against a URL that streams without end;
    ``max_pixels`` against a small file that decodes to a huge image (checked on the header's
    size before any pixel is decoded; ``None``: only Pillow's own decompression-bomb limit)."""

    timeout_s: float = 30.0
    max_bytes: int = 50 * 1024 * 1024
    max_pixels: int | None = MAX_PIXELS
    retry: RetryPolicy = RetryPolicy()

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise FlickrConfigError(f"ImageConfig.timeout_s must be > 0, got {self.timeout_s}")
        if self.max_bytes < 1:
            raise FlickrConfigError(f"ImageConfig.max_bytes must be >= 1, got {self.max_bytes}")
        if self.max_pixels is not None and self.max_pixels < 1:
            raise FlickrConfigError(f"ImageConfig.max_pixels must be >= 1 or None, got {self.max_pixels}")


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


def is_retryable(status: str, reason: str) -> bool:
    """Whether a recorded image outcome is worth downloading again on a later crawl."""
    return status == IMAGE_BROKEN and reason.startswith(RETRYABLE_BROKEN_PREFIX)


def decode_check(path: Path, max_pixels: int | None = MAX_PIXELS) -> tuple[int, int]:
    """``(width, height)`` when the file at ``path`` is a complete image of at most
    ``max_pixels`` pixels; otherwise a ``ValueError`` whose message says why. The size is
    read from the header before any pixel is decoded."""
    try:
        with warnings.catch_warnings():
            # max_pixels is the limit that applies here; Pillow's warning would only repeat it.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if max_pixels is not None and width * height > max_pixels:
                    raise _TooManyPixels(
                        f"too large to decode safely: {width}x{height} = {width * height:,} "
                        f"pixels > max_pixels {max_pixels:,}"
                    )
                image.verify()
            # verify() leaves the image unusable and skips pixel data; load() decodes it all.
            with Image.open(path) as image:
                image.load()
                return image.size
    except _TooManyPixels as exc:
        raise ValueError(str(exc)) from None
    except Image.DecompressionBombError as exc:
        raise ValueError(f"too large to decode safely: {exc}") from None
    except Exception as exc:  # Pillow raises many types (OSError, SyntaxError, struct.error...)
        message = str(exc).replace(str(path), Path(path).name)
        raise ValueError(f"{RETRYABLE_BROKEN_PREFIX}: {type(exc).__name__}: {message}") from None


class _TooManyPixels(Exception):
    pass


def inspect_file(path: Path, max_pixels: int | None = MAX_PIXELS) -> ImageResult:
    """Hash (streamed) and decode an image on disk: a fresh download, or one a resumed crawl
    reuses."""
    path = Path(path)
    with path.open("rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    n_bytes = path.stat().st_size
    try:
        width, height = decode_check(path, max_pixels)
    except ValueError as exc:
        return ImageResult(IMAGE_BROKEN, str(exc), path, digest, None, None, n_bytes)
    return ImageResult(IMAGE_OK, "", path, digest, width, height, n_bytes)


class _OverMaxBytes(Exception):
    def __init__(self, n_bytes: int) -> None:
        self.n_bytes = n_bytes


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

    def _stream_to(self, response: requests.Response, dest: Path) -> None:
        """Write the body to ``dest`` through a temporary file, chunk by chunk: the image is
        never held whole in memory, and ``dest`` never holds a partial download (a crawl
        killed mid-write would otherwise reuse it as finished when it resumes)."""
        received = 0
        with atomic_path(dest) as tmp:
            with tmp.open("wb") as out:
                for chunk in response.iter_content(_CHUNK):
                    received += len(chunk)
                    if received > self.config.max_bytes:
                        raise _OverMaxBytes(received)
                    out.write(chunk)

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
                        try:
                            self._stream_to(response, dest)
                        except _OverMaxBytes as over:
                            return ImageResult(
                                IMAGE_BROKEN,
                                f"larger than max_bytes={self.config.max_bytes}",
                                None, None, None, None, over.n_bytes,
                            )
                        return inspect_file(dest, self.config.max_pixels)
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
