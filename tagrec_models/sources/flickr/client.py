"""A Flickr REST client over ``flickrapi`` 2.4.0: rate limited, retried, returning records.

What it adds to ``flickrapi.FlickrAPI`` (DESIGN.md, "ingest", source ``flickr``):

* a token-bucket rate limiter (default 3,600 calls an hour, Flickr's per-key allowance);
* retries with exponential back-off and jitter (``retry.RetryPolicy``) on HTTP 5xx, 408, 429
  (``Retry-After`` honoured), time-outs, connection errors, malformed JSON and Flickr's
  transient error codes; every other failure is a ``FlickrPermanentError`` raised at once,
  naming the method and its arguments;
* records (``records.PhotoPage``, ``PhotoContexts``...) instead of raw JSON;
* the key and secret kept out of every log line, message and repr.

Transient Flickr codes (``ClientConfig.transient_codes``): Flickr documents 105 "Service
currently unavailable" and 106 "Write operation failed ... temporary issue" as temporary for
every method, and 10 "the Flickr search API is not currently available" for
``flickr.photos.search``. Code 0 and 201 are not documented but are answered during outages
("Sorry, the Flickr API service is not currently available"), so they are retried too. All
else (100 invalid key, 96 invalid signature, 1 group/photo not found, 2 permission...) is
permanent.

Why a response hook: ``flickrapi`` turns any non-200 answer into a bare ``FlickrError``
without status or headers, so the client gives ``flickrapi`` its own ``requests.Session`` whose
hook remembers the last status and ``Retry-After``.

Why a log filter: at DEBUG level ``flickrapi``, ``requests_oauthlib`` and ``oauthlib`` log the
consumer key (in the OAuth header, the signature base string and ``FlickrAPI``'s repr). The
client installs a filter on those loggers that replaces every registered key or secret with
``<redacted>``.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlsplit

import flickrapi
import flickrapi.exceptions
import requests

from tagrec_models.sources.flickr.errors import (
    FlickrApiError,
    FlickrConfigError,
    FlickrPermanentError,
    FlickrRetriesExhausted,
)
from tagrec_models.sources.flickr.ratelimit import TokenBucket
from tagrec_models.sources.flickr.records import (
    BASE_EXTRAS,
    IMAGE_SIZES,
    PhotoContexts,
    PhotoPage,
    parse_contexts,
    parse_photo_page,
    parse_raw_tags,
)
from tagrec_models.sources.flickr.retry import RetryAfterTooLong, RetryPolicy, parse_retry_after

FLICKR_REST_URL = "https://api.flickr.com/services/rest/"
Log = Callable[[str], None]

REDACTED = "<redacted>"
_LOGGER_PREFIXES = ("flickrapi", "oauthlib", "requests_oauthlib", "requests", "urllib3")


class _SecretRedactor(logging.Filter):
    """Replaces registered secrets in log records of the HTTP/OAuth libraries."""

    def __init__(self) -> None:
        super().__init__()
        self._secrets: set[str] = set()
        self._lock = threading.Lock()

    def add(self, *secrets: str) -> None:
        with self._lock:
            self._secrets.update(s for s in secrets if s)

    def filter(self, record: logging.LogRecord) -> bool:
        with self._lock:
            secrets = sorted(self._secrets, key=len, reverse=True)
        if not secrets:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a record whose args do not format: leave it to logging
            return True
        redacted = message
        for secret in secrets:
            redacted = redacted.replace(secret, REDACTED)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


_REDACTOR = _SecretRedactor()


def _install_redactor() -> None:
    # A logger's filters see only the records created on that logger, not its children's, so
    # the filter goes on every logger of the libraries that exists now (they are created at
    # import, which has happened: ``flickrapi`` imports the rest).
    names = [
        name
        for name in list(logging.root.manager.loggerDict)
        if name.split(".")[0] in _LOGGER_PREFIXES
    ]
    for name in names + list(_LOGGER_PREFIXES):
        logger = logging.getLogger(name)
        if _REDACTOR not in logger.filters:
            logger.addFilter(_REDACTOR)


@dataclass(frozen=True)
class FlickrCredentials:
    """The API key and secret. The caller reads them (the Dagster layer from
    ``FLICKR_API_KEY`` / ``FLICKR_API_SECRET``); ``repr`` never shows them."""

    api_key: str = field(repr=False)
    api_secret: str = field(repr=False)

    def __post_init__(self) -> None:
        for name, env in (("api_key", "FLICKR_API_KEY"), ("api_secret", "FLICKR_API_SECRET")):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise FlickrConfigError(
                    f"Flickr {name} is missing or empty (the pipeline reads it from {env})"
                )
            if value != value.strip():
                raise FlickrConfigError(f"Flickr {name} has leading or trailing white space")

    def __repr__(self) -> str:
        return f"FlickrCredentials(api_key={REDACTED}, api_secret={REDACTED})"

    __str__ = __repr__


@dataclass(frozen=True)
class ClientConfig:
    """Client settings; defaults are Flickr's documented limits."""

    rest_url: str = FLICKR_REST_URL
    calls_per_hour: float = 3600.0
    burst: int = 1
    timeout_s: float = 30.0
    retry: RetryPolicy = RetryPolicy()
    transient_codes: tuple[int, ...] = (0, 105, 106, 201)
    transient_method_codes: tuple[tuple[str, int], ...] = (("flickr.photos.search", 10),)

    def __post_init__(self) -> None:
        parts = urlsplit(self.rest_url)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise FlickrConfigError(f"ClientConfig.rest_url is not an http(s) URL: {self.rest_url!r}")
        if not self.calls_per_hour > 0:
            raise FlickrConfigError(f"ClientConfig.calls_per_hour must be > 0, got {self.calls_per_hour}")
        if self.burst < 1:
            raise FlickrConfigError(f"ClientConfig.burst must be >= 1, got {self.burst}")
        if not self.timeout_s > 0:
            raise FlickrConfigError(f"ClientConfig.timeout_s must be > 0, got {self.timeout_s}")


@dataclass
class CallStats:
    """What the client did: attempts per method, retries, seconds waited on the limiter and in
    back-off."""

    attempts: Counter = field(default_factory=Counter)
    retries: int = 0
    rate_wait_s: float = 0.0
    backoff_s: float = 0.0

    def snapshot(self) -> dict[str, Any]:
        return {
            "attempts": dict(self.attempts),
            "retries": self.retries,
            "rate_wait_s": self.rate_wait_s,
            "backoff_s": self.backoff_s,
        }


class FlickrClient:
    """Rate-limited, retried Flickr calls returning records.

    ``clock`` and ``sleep`` (default ``time.monotonic`` / ``time.sleep``) drive the limiter and
    the back-off, so tests inject a fake pair. ``log`` receives one line per retry.
    """

    def __init__(
        self,
        credentials: FlickrCredentials,
        config: ClientConfig | None = None,
        *,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] | None = None,
        log: Log | None = None,
    ) -> None:
        if not isinstance(credentials, FlickrCredentials):
            raise FlickrConfigError(
                f"FlickrClient needs FlickrCredentials, got {type(credentials).__name__}"
            )
        self.config = config or ClientConfig()
        self._sleep = sleep or time.sleep
        self._log = log or (lambda message: None)
        self._rng: random.Random = self.config.retry.rng()
        _REDACTOR.add(credentials.api_key, credentials.api_secret)
        _install_redactor()
        self._api = flickrapi.FlickrAPI(
            credentials.api_key,
            credentials.api_secret,
            format="parsed-json",
            store_token=False,
            timeout=self.config.timeout_s,
        )
        self._api.REST_URL = self.config.rest_url
        # Our own session (flickrapi shares one class-wide) with a hook that keeps the status
        # and Retry-After of the last answer, which flickrapi's FlickrError drops.
        self._session = requests.Session()
        self._session.hooks["response"].append(self._remember)
        self._api.flickr_oauth.session = self._session
        self._last_status: int | None = None
        self._last_retry_after: str | None = None
        self.limiter = TokenBucket(
            self.config.calls_per_hour, self.config.burst, clock=clock, sleep=self._sleep
        )
        self.stats = CallStats()

    def __repr__(self) -> str:
        return (
            f"FlickrClient(rest_url={self.config.rest_url!r}, "
            f"calls_per_hour={self.config.calls_per_hour}, credentials={REDACTED})"
        )

    __str__ = __repr__

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> "FlickrClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _remember(self, response: requests.Response, *args: object, **kwargs: object) -> None:
        self._last_status = response.status_code
        self._last_retry_after = response.headers.get("Retry-After")

    def _transient_code(self, method: str, code: int) -> bool:
        return code in self.config.transient_codes or (method, code) in self.config.transient_method_codes

    def call(self, method: str, **params: object) -> dict[str, Any]:
        """One Flickr method, rate limited and retried; returns the parsed JSON answer
        (``stat == "ok"``). Raises ``FlickrPermanentError`` or ``FlickrRetriesExhausted``."""
        params = {k: str(v) for k, v in params.items() if v is not None}
        policy = self.config.retry
        reason = "no attempt made"
        for attempt in range(1, policy.max_attempts + 1):
            self.stats.rate_wait_s += self.limiter.acquire()
            self.stats.attempts[method] += 1
            self._last_status, self._last_retry_after = None, None
            retry_after: float | None = None
            try:
                payload = self._api.do_flickr_call(method, timeout=self.config.timeout_s, **params)
            except flickrapi.exceptions.FlickrError as exc:
                status = self._last_status
                if status is not None and status != 200:
                    if status in (408, 429) or 500 <= status < 600:
                        reason = f"HTTP {status}"
                        retry_after = parse_retry_after(self._last_retry_after)
                    else:
                        raise FlickrPermanentError(method, params, f"HTTP {status}") from None
                elif exc.code is not None and self._transient_code(method, exc.code):
                    reason = f"Flickr error {exc.code}: {_flickr_message(exc)}"
                elif exc.code is not None:
                    hint = " (check the API key)" if exc.code == 100 else ""
                    hint = " (check the API secret)" if exc.code in (96, 97) else hint
                    raise FlickrPermanentError(
                        method, params, f"Flickr error {exc.code}: {_flickr_message(exc)}{hint}", exc.code
                    ) from None
                else:
                    raise FlickrPermanentError(method, params, _flickr_message(exc)) from None
            except requests.Timeout:
                reason = f"timed out after {self.config.timeout_s:g}s"
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
                reason = f"connection failed ({type(exc).__name__})"
            except requests.RequestException as exc:
                # InvalidURL, MissingSchema and friends: retrying cannot fix a bad URL.
                raise FlickrPermanentError(method, params, f"{type(exc).__name__}: {exc}") from None
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                reason = f"malformed JSON ({exc})"
            except KeyError as exc:
                # flickrapi reads ``code`` and ``message`` of a ``stat: fail`` answer blindly.
                reason = f"malformed answer (stat 'fail' without {exc})"
            else:
                if isinstance(payload, dict) and payload.get("stat") == "ok":
                    return payload
                reason = "malformed answer (not a JSON object with stat 'ok')"
            if attempt == policy.max_attempts:
                break
            try:
                delay = policy.delay(attempt, self._rng, retry_after)
            except RetryAfterTooLong as exc:
                raise FlickrRetriesExhausted(method, params, f"{reason}; {exc}") from None
            self.stats.retries += 1
            self.stats.backoff_s += delay
            self._log(
                f"{method} attempt {attempt}/{policy.max_attempts} failed ({reason}); "
                f"retrying in {delay:.1f}s"
            )
            self._sleep(delay)
        raise FlickrRetriesExhausted(
            method, params, f"gave up after {policy.max_attempts} attempts; last: {reason}"
        )

    # -- typed calls ---------------------------------------------------------------------------

    @staticmethod
    def extras(image_size: str) -> str:
        if image_size not in IMAGE_SIZES:
            raise FlickrConfigError(f"image_size {image_size!r} is not one of {IMAGE_SIZES}")
        return ",".join(BASE_EXTRAS + (image_size,))

    def group_pool_page(
        self, group_id: str, *, page: int, per_page: int, image_size: str = "url_z"
    ) -> PhotoPage:
        """One page of ``flickr.groups.pools.getPhotos`` (newest addition to the pool first)."""
        method = "flickr.groups.pools.getPhotos"
        params = {
            "group_id": group_id,
            "page": page,
            "per_page": per_page,
            "extras": self.extras(image_size),
        }
        payload = self.call(method, **params)
        return parse_photo_page(payload, method, params, image_size)

    def search_page(
        self,
        *,
        page: int,
        per_page: int,
        image_size: str = "url_z",
        tags: tuple[str, ...] = (),
        tag_mode: str = "any",
        text: str | None = None,
        min_upload_date: int | None = None,
        sort: str = "date-posted-asc",
    ) -> PhotoPage:
        """One page of ``flickr.photos.search``. Oldest first by default: new uploads then
        land on later pages, so pages already read do not shift during a crawl."""
        method = "flickr.photos.search"
        params: dict[str, object] = {
            "page": page,
            "per_page": per_page,
            "extras": self.extras(image_size),
            "sort": sort,
        }
        if tags:
            params["tags"] = ",".join(tags)
            params["tag_mode"] = tag_mode
        if text:
            params["text"] = text
        if min_upload_date is not None:
            params["min_upload_date"] = int(min_upload_date)
        payload = self.call(method, **params)
        return parse_photo_page(payload, method, params, image_size)

    def photo_contexts(self, photo_id: str) -> PhotoContexts:
        """The public group pools of one photo (``flickr.photos.getAllContexts``)."""
        payload = self.call("flickr.photos.getAllContexts", photo_id=photo_id)
        return parse_contexts(payload, photo_id)

    def photo_raw_tags(self, photo_id: str) -> tuple[str, ...]:
        """The authors' raw tag spellings (``flickr.photos.getInfo``); one extra call a photo."""
        method = "flickr.photos.getInfo"
        payload = self.call(method, photo_id=photo_id)
        return parse_raw_tags(payload, method, {"photo_id": photo_id})


def _flickr_message(exc: flickrapi.exceptions.FlickrError) -> str:
    # flickrapi formats "Error: <code>: <message>"; keep the server's message only.
    text = str(exc)
    prefix = f"Error: {exc.code}: " if exc.code is not None else ""
    return text[len(prefix):] if prefix and text.startswith(prefix) else text


