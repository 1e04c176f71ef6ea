"""Errors of the Flickr client and crawler.

Every message names the Flickr method and its arguments (never the API key or secret: those
travel only in the OAuth header, which no message or log line of ours contains).
"""

from __future__ import annotations

from typing import Mapping


def describe_call(method: str, params: Mapping[str, object]) -> str:
    """``flickr.photos.search(page=2, tags='cat')``: the call as a person would read it, with
    the transport parameters that every call carries left out."""
    shown = {k: v for k, v in params.items() if k not in {"format", "nojsoncallback"}}
    # Values print as the strings that go on the wire, whatever type the caller used.
    args = ", ".join(f"{key}={str(shown[key])!r}" for key in sorted(shown))
    return f"{method}({args})"


class FlickrConfigError(ValueError):
    """Bad configuration given to the client or crawler (missing key, bad spec field)."""


class FlickrApiError(RuntimeError):
    """A Flickr call that did not give a usable answer."""

    def __init__(
        self,
        method: str,
        params: Mapping[str, object],
        reason: str,
        code: int | None = None,
    ) -> None:
        self.method = method
        self.params = dict(params)
        self.reason = reason
        self.code = code
        super().__init__(f"{describe_call(method, params)} failed: {reason}")


class FlickrPermanentError(FlickrApiError):
    """An answer that retrying cannot change (invalid key, unknown group, photo not found,
    HTTP 4xx other than 408/429): raised at once, never retried."""


class FlickrRetriesExhausted(FlickrApiError):
    """A transient failure (5xx, 429, time-out, malformed JSON, a transient Flickr code) that
    lasted through every attempt the retry policy allows."""


class FlickrResponseError(FlickrApiError):
    """Flickr answered ``stat: ok`` but the envelope lacks a field the crawler needs (for
    example ``photos.pages``): the API changed or the answer is not Flickr's, so no retry."""


class CrawlStateError(RuntimeError):
    """The crawl directory cannot be used as asked: it holds another spec, its state file is
    unreadable, another process holds its lock, or it holds no finished crawl."""


class ImageDownloadError(RuntimeError):
    """An image that failed transiently (5xx, 429, time-out, cut connection) on every attempt.
    The crawl stops (and resumes later) rather than record a passing outage as a broken image."""

    def __init__(self, photo_id: str, url: str, reason: str) -> None:
        self.photo_id = photo_id
        self.url = url
        self.reason = reason
        super().__init__(f"image of photo {photo_id} at {url} failed: {reason}")
