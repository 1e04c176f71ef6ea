"""A local Flickr-compatible HTTP server for the crawler tests, with fault injection.

It answers the REST methods the crawler uses (``flickr.groups.pools.getPhotos``,
``flickr.photos.search``, ``flickr.photos.getAllContexts``, ``flickr.photos.getInfo``) in
Flickr's JSON shapes, checks the OAuth 1 header like Flickr (unknown consumer key: error 100;
wrong HMAC-SHA1 signature: error 96), and serves image files. Its records are the real
openclipart sample of ``tests/fixtures/openclipart``: each SVG's RDF metadata gives the photo
(``dc:creator`` = owner, ``dc:subject`` = raw tags, ``dc:title``), its category folder a group
(a file symlinked into a second folder is one photo in two groups), and the PNG at the same
path is the image served at the photo's URL.

Ids and dates are deterministic: photos sorted by path get ids ``52000000001...`` and upload
dates one hour apart from ``UPLOAD_EPOCH``; a photo joins its pools when uploaded. Only photos
uploaded up to ``visible_until`` are listed, so a test "adds" photos by moving it forward.

Faults (``Fault`` and its constructors) hit the matching requests a bounded number of times:
HTTP errors (500, 429 with ``Retry-After``), slow answers, malformed JSON, ``stat: fail``
answers, truncated images (short body, or a connection cut before ``Content-Length``), other
image bodies (a decompression bomb) and missing fields. Every request is logged (method and parameters, never the OAuth header), so a
test can count what was asked. Bound to 127.0.0.1 on a free port; every wait is capped.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import math
import re
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qsl, urlsplit

import pytest
from oauthlib.oauth1.rfc5849 import signature as oauth_signature
from oauthlib.oauth1.rfc5849 import utils as oauth_utils
from PIL import Image

UPLOAD_EPOCH = 1_600_000_000  # 2020-09-13 12:26:40 UTC
UPLOAD_STEP_S = 3600
FIRST_PHOTO_ID = 52_000_000_001
MAX_DELAY_S = 5.0
MAX_FAULT_TIMES = 1000
MAX_BODY_BYTES = 1 << 20
TEST_KEY = "k3y-0f-the-t3st-s3rver-1f0a"
TEST_SECRET = "s3cr3t-0f-the-t3st-s3rver-9b2c"

_NS = {
    "dc": "http://purl.org/dc/elements/1.1/",
    "cc": "http://web.resource.org/cc/",
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
}


# -- the sample -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleGroup:
    group_id: str
    name: str


@dataclass(frozen=True)
class SamplePhoto:
    photo_id: str
    secret: str
    owner: str
    owner_name: str
    title: str
    raw_tags: tuple[str, ...]
    group_ids: tuple[str, ...]
    date_uploaded: int
    license: str
    png: Path
    width: int
    height: int


def flickr_clean_tag(raw: str) -> str:
    """Flickr's normalised tag form (the ``tags`` extra): lower case, no spaces or punctuation."""
    return re.sub(r"[\W_]+", "", raw.lower())


def _owner_nsid(name: str) -> str:
    digits = int(hashlib.sha256(name.encode()).hexdigest(), 16) % 10**8
    return f"{digits:08d}@N00"


@functools.lru_cache(maxsize=4)
def load_sample(root: Path) -> tuple[tuple[SamplePhoto, ...], dict[str, SampleGroup]]:
    """Photos and groups from ``root/svg`` (metadata) and ``root/png`` (pixels); cached, as
    every test's server reads the same sample (callers must not mutate the dict)."""
    svg_root = root / "svg"
    by_real: dict[Path, list[Path]] = {}
    for path in sorted(svg_root.rglob("*.svg")):
        by_real.setdefault(path.resolve(), []).append(path)
    categories = sorted({str(p.parent.relative_to(svg_root)) for paths in by_real.values() for p in paths})
    groups = {c: SampleGroup(f"{7000 + i}@N20", c) for i, c in enumerate(categories)}
    photos = []
    for index, real in enumerate(sorted(by_real, key=lambda p: str(p.relative_to(svg_root.resolve())))):
        work = ET.parse(real).getroot().find(".//cc:Work", _NS)
        title = work.findtext("dc:title", "", _NS) if work is not None else ""
        creator = work.findtext("dc:creator/cc:Agent/dc:title", "", _NS) if work is not None else ""
        tags = tuple(
            li.text.strip()
            for li in (work.findall("dc:subject/rdf:Bag/rdf:li", _NS) if work is not None else [])
            if li.text and li.text.strip()
        )
        rel = real.relative_to(svg_root.resolve())
        png = (root / "png" / rel).with_suffix(".png")
        with Image.open(png) as image:
            width, height = image.size
        photo_id = str(FIRST_PHOTO_ID + index)
        photos.append(
            SamplePhoto(
                photo_id=photo_id,
                secret=hashlib.sha256(photo_id.encode()).hexdigest()[:10],
                owner=_owner_nsid(creator),
                owner_name=creator,
                title=title,
                raw_tags=tags,
                group_ids=tuple(
                    groups[str(p.parent.relative_to(svg_root))].group_id for p in by_real[real]
                ),
                date_uploaded=UPLOAD_EPOCH + index * UPLOAD_STEP_S,
                license="9",  # Flickr's id for CC0 1.0; the sample is public domain
                png=png,
                width=width,
                height=height,
            )
        )
    return tuple(photos), {g.group_id: g for g in groups.values()}


# -- faults -----------------------------------------------------------------------------------


@dataclass
class Fault:
    """One injected fault; it hits the next ``times`` requests that match ``target``
    (``rest`` or ``image``), ``method`` and every ``match`` parameter (compared as strings)."""

    action: str  # status | slow | malformed | fail | truncate | cut | drop_field | replace
    target: str = "rest"
    method: str | None = None
    match: dict[str, str] = field(default_factory=dict)
    times: int = 1
    status: int = 500
    retry_after: str | None = None
    delay_s: float = 0.0
    code: int = 0
    message: str = ""
    field_name: str = ""
    photo_id: str | None = None
    keep_bytes: int = 0
    body: bytes = b""

    def __post_init__(self) -> None:
        if not 1 <= self.times <= MAX_FAULT_TIMES:
            raise ValueError(f"Fault.times must be in 1..{MAX_FAULT_TIMES}")
        if not 0 <= self.delay_s <= MAX_DELAY_S:
            raise ValueError(f"Fault.delay_s must be in 0..{MAX_DELAY_S}")
        self.match = {k: str(v) for k, v in self.match.items()}

    def hits(self, target: str, method: str | None, params: dict[str, str]) -> bool:
        return (
            self.times > 0
            and self.target == target
            and (self.method is None or self.method == method)
            and all(params.get(k) == v for k, v in self.match.items())
        )


def http_error(status: int = 500, *, retry_after: int | str | None = None, **kw: Any) -> Fault:
    return Fault("status", status=status, retry_after=None if retry_after is None else str(retry_after), **kw)


def slow(delay_s: float, **kw: Any) -> Fault:
    return Fault("slow", delay_s=delay_s, **kw)


def malformed_json(**kw: Any) -> Fault:
    return Fault("malformed", **kw)


def flickr_fail(code: int, message: str, **kw: Any) -> Fault:
    return Fault("fail", code=code, message=message, **kw)


def truncated_image(keep_bytes: int, **kw: Any) -> Fault:
    """A short body sent whole (matching ``Content-Length``): a broken file, not an outage."""
    return Fault("truncate", target="image", keep_bytes=keep_bytes, **kw)


def cut_image(keep_bytes: int, **kw: Any) -> Fault:
    """The full ``Content-Length`` announced, ``keep_bytes`` sent, connection closed."""
    return Fault("cut", target="image", keep_bytes=keep_bytes, **kw)


def replaced_image(body: bytes, **kw: Any) -> Fault:
    """``body`` served whole instead of the photo's PNG (an image the host really holds)."""
    return Fault("replace", target="image", body=body, **kw)


def missing_field(field_name: str, *, photo_id: str | None = None, **kw: Any) -> Fault:
    """Drop ``field_name`` from one photo entry (``photo_id``), from every photo entry
    (``photo_id=None``), or from the envelope (``field_name='photos.pages'``)."""
    return Fault("drop_field", field_name=field_name, photo_id=photo_id, **kw)


# -- the server -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Logged:
    target: str  # rest | image
    method: str | None
    params: dict[str, str]


class _ApiError(Exception):
    def __init__(self, code: int, message: str) -> None:
        self.code, self.message = code, message


class FlickrTestServer:
    """``start()`` / ``stop()`` (or ``with``); ``rest_url`` is for ``ClientConfig.rest_url``."""

    def __init__(
        self,
        sample_root: Path,
        *,
        api_key: str = TEST_KEY,
        api_secret: str = TEST_SECRET,
    ) -> None:
        self.photos, groups = load_sample(Path(sample_root).resolve())
        self.groups = dict(groups)
        self.api_key = api_key
        self.api_secret = api_secret
        self.visible_until = max(p.date_uploaded for p in self.photos)
        self.faults: list[Fault] = []
        self.log: list[Logged] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # control
    def start(self) -> "FlickrTestServer":
        server = self

        class Handler(_Handler):
            owner = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            assert self._thread is not None
            self._thread.join(timeout=5)
            self._httpd = None

    def __enter__(self) -> "FlickrTestServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def rest_url(self) -> str:
        return f"{self.base_url}/services/rest/"

    def add_fault(self, *faults: Fault) -> None:
        with self._lock:
            self.faults.extend(faults)

    def show_first(self, n: int) -> None:
        """Make only the ``n`` oldest photos visible (the others are "uploaded later")."""
        ordered = sorted(self.photos, key=lambda p: p.date_uploaded)
        self.visible_until = ordered[n - 1].date_uploaded if n else UPLOAD_EPOCH - 1

    def count(self, method: str, **params: object) -> int:
        """Requests so far of ``method`` (or ``"image"``) whose parameters include ``params``."""
        want = {k: str(v) for k, v in params.items()}
        with self._lock:
            return sum(
                1
                for entry in self.log
                if (entry.method == method or (method == "image" and entry.target == "image"))
                and all(entry.params.get(k) == v for k, v in want.items())
            )

    def reset_log(self) -> None:
        with self._lock:
            self.log.clear()

    def visible(self) -> list[SamplePhoto]:
        return [p for p in self.photos if p.date_uploaded <= self.visible_until]

    def photo(self, photo_id: str) -> SamplePhoto:
        return next(p for p in self.photos if p.photo_id == photo_id)

    def group_by_name(self, name: str) -> SampleGroup:
        return next(g for g in self.groups.values() if g.name == name)

    def image_url(self, photo: SamplePhoto, suffix: str) -> str:
        return f"{self.base_url}/images/{photo.photo_id}_{photo.secret}_{suffix}.png"

    def _take_fault(self, target: str, method: str | None, params: dict[str, str]) -> Fault | None:
        with self._lock:
            self.log.append(Logged(target, method, dict(params)))
            for fault in self.faults:
                if fault.hits(target, method, params):
                    fault.times -= 1
                    return fault
        return None

    # REST methods
    def _check_auth(self, handler: "_Handler", path: str, query: str, body: str) -> None:
        header = handler.headers.get("Authorization", "")
        if not header.startswith("OAuth "):
            raise _ApiError(100, "Invalid API Key (Key has invalid format)")
        oauth = dict(oauth_utils.parse_authorization_header(header))
        if oauth.get("oauth_consumer_key") != self.api_key:
            raise _ApiError(100, "Invalid API Key (Key not found)")
        if oauth.get("oauth_signature_method") != "HMAC-SHA1" or "oauth_signature" not in oauth:
            raise _ApiError(97, "Missing signature")
        # RFC 5849 3.4: base string from method, URI and every parameter but the signature.
        params = oauth_signature.collect_parameters(
            uri_query=query, body=body, headers={"Authorization": header}, exclude_oauth_signature=True
        )
        base = oauth_signature.signature_base_string(
            "POST" if handler.command == "POST" else "GET",
            oauth_signature.base_string_uri(f"http://{handler.headers['Host']}{path}"),
            oauth_signature.normalize_parameters(params),
        )
        # RFC 5849 3.4.2: HMAC-SHA1 keyed by "<consumer secret>&<token secret>" (no token here).
        signing_key = f"{oauth_utils.escape(self.api_secret)}&".encode()
        expected = base64.b64encode(hmac.new(signing_key, base.encode(), hashlib.sha1).digest()).decode()
        if not hmac.compare_digest(expected, oauth_utils.unescape(oauth["oauth_signature"])):
            raise _ApiError(96, "Invalid signature")

    def _photo_entry(self, photo: SamplePhoto, extras: set[str], pool: bool) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "id": photo.photo_id,
            "owner": photo.owner,
            "secret": photo.secret,
            "server": "65535",
            "farm": 66,
            "title": photo.title,
            "ispublic": 1,
            "isfriend": 0,
            "isfamily": 0,
        }
        if "license" in extras:
            entry["license"] = photo.license
        if "date_upload" in extras:
            entry["dateupload"] = str(photo.date_uploaded)
        if "owner_name" in extras:
            entry["ownername"] = photo.owner_name
        if "tags" in extras:
            entry["tags"] = " ".join(t for t in (flickr_clean_tag(r) for r in photo.raw_tags) if t)
        for extra in extras:
            if extra.startswith("url_"):
                suffix = extra[4:]
                entry[extra] = self.image_url(photo, suffix)
                entry[f"height_{suffix}"] = photo.height
                entry[f"width_{suffix}"] = photo.width
        if pool:
            entry["dateadded"] = str(photo.date_uploaded)
        return entry

    def _listing(self, photos: list[SamplePhoto], params: dict[str, str], pool: bool) -> dict[str, Any]:
        per_page = min(500, max(1, int(params.get("per_page", "100"))))
        page = max(1, int(params.get("page", "1")))
        extras = {e.strip() for e in params.get("extras", "").split(",") if e.strip()}
        total = len(photos)
        pages = math.ceil(total / per_page)
        chunk = photos[(page - 1) * per_page : page * per_page]
        return {
            "photos": {
                "page": page,
                "pages": pages,
                "perpage": per_page,
                "total": total,
                "photo": [self._photo_entry(p, extras, pool) for p in chunk],
            },
            "stat": "ok",
        }

    def _method(self, method: str, params: dict[str, str]) -> dict[str, Any]:
        visible = self.visible()
        if method == "flickr.groups.pools.getPhotos":
            group_id = params.get("group_id", "")
            if group_id not in self.groups:
                raise _ApiError(1, "Group not found")
            members = [p for p in visible if group_id in p.group_ids]
            # Pools list the newest addition first.
            members.sort(key=lambda p: (p.date_uploaded, p.photo_id), reverse=True)
            return self._listing(members, params, pool=True)
        if method == "flickr.photos.search":
            tags = [t for t in params.get("tags", "").split(",") if t.strip()]
            text = params.get("text", "").strip().lower()
            if not tags and not text and "min_upload_date" not in params:
                raise _ApiError(3, "Parameterless searches have been disabled")
            wanted = {flickr_clean_tag(t) for t in tags}
            found = []
            for photo in visible:
                own = {flickr_clean_tag(t) for t in photo.raw_tags}
                if wanted:
                    hit = wanted <= own if params.get("tag_mode") == "all" else bool(wanted & own)
                    if not hit:
                        continue
                if text and text not in photo.title.lower() and not any(text in t.lower() for t in photo.raw_tags):
                    continue
                if "min_upload_date" in params and photo.date_uploaded < int(params["min_upload_date"]):
                    continue
                found.append(photo)
            descending = params.get("sort", "date-posted-desc") != "date-posted-asc"
            found.sort(key=lambda p: (p.date_uploaded, p.photo_id), reverse=descending)
            return self._listing(found, params, pool=False)
        if method in ("flickr.photos.getAllContexts", "flickr.photos.getInfo"):
            photo = next((p for p in visible if p.photo_id == params.get("photo_id")), None)
            if photo is None:
                raise _ApiError(1, "Photo not found")
            if method == "flickr.photos.getAllContexts":
                pools = [
                    {
                        "id": g,
                        "title": self.groups[g].name,
                        "url": f"/groups/{g}/pool/",
                        "iconserver": "0",
                        "iconfarm": 0,
                        "members": "1",
                        "pool_count": "1",
                    }
                    for g in photo.group_ids
                ]
                return {"set": [], "pool": pools, "stat": "ok"}
            return {
                "photo": {
                    "id": photo.photo_id,
                    "owner": {"nsid": photo.owner, "username": photo.owner_name},
                    "title": {"_content": photo.title},
                    "dates": {"posted": str(photo.date_uploaded)},
                    "license": photo.license,
                    "tags": {
                        "tag": [
                            {"id": f"{photo.photo_id}-{i}", "author": photo.owner, "raw": raw,
                             "_content": flickr_clean_tag(raw), "machine_tag": 0}
                            for i, raw in enumerate(photo.raw_tags)
                        ]
                    },
                },
                "stat": "ok",
            }
        raise _ApiError(112, f'Method "{method}" not found')

    def handle_rest(self, handler: "_Handler") -> None:
        parts = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            handler.reply(413, b"too large", "text/plain")
            return
        body = handler.rfile.read(length).decode("utf-8") if length else ""
        params = dict(parse_qsl(parts.query)) | dict(parse_qsl(body))
        method = params.get("method")
        shown = {k: v for k, v in params.items() if not k.startswith("oauth_")}
        fault = self._take_fault("rest", method, shown)
        if fault is not None and fault.action == "status":
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            handler.reply(fault.status, b"<html>error</html>", "text/html", headers)
            return
        if fault is not None and fault.action == "slow":
            time.sleep(fault.delay_s)
        if fault is not None and fault.action == "malformed":
            handler.reply(200, b'{"photos": {"page": 1, "pages": ', "application/json")
            return
        try:
            if fault is not None and fault.action == "fail":
                raise _ApiError(fault.code, fault.message)
            self._check_auth(handler, parts.path, parts.query, body)
            if not method:
                raise _ApiError(112, 'Method "" not found')
            payload = self._method(method, params)
        except _ApiError as exc:
            payload = {"stat": "fail", "code": exc.code, "message": exc.message}
        if fault is not None and fault.action == "drop_field":
            _drop(payload, fault.field_name, fault.photo_id)
        handler.reply(200, json.dumps(payload).encode(), "application/json")

    def handle_image(self, handler: "_Handler") -> None:
        match = re.fullmatch(r"/images/(\d+)_([0-9a-f]+)_(\w+)\.png", urlsplit(handler.path).path)
        photo = None
        if match:
            photo = next((p for p in self.photos if p.photo_id == match.group(1)), None)
        params = {"photo_id": match.group(1)} if match else {"path": handler.path}
        fault = self._take_fault("image", None, params)
        if photo is None or photo.secret != match.group(2):
            handler.reply(404, b"not found", "text/plain")
            return
        data = photo.png.read_bytes()
        if fault is not None and fault.action == "status":
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            handler.reply(fault.status, b"error", "text/plain", headers)
            return
        if fault is not None and fault.action == "slow":
            time.sleep(fault.delay_s)
        if fault is not None and fault.action == "truncate":
            data = data[: fault.keep_bytes]
        if fault is not None and fault.action == "replace":
            data = fault.body
        if fault is not None and fault.action == "cut":
            handler.reply(200, data[: fault.keep_bytes], "image/png", content_length=len(data))
            handler.close_connection = True
            return
        handler.reply(200, data, "image/png")


def _drop(payload: dict[str, Any], name: str, photo_id: str | None) -> None:
    if "." in name:  # an envelope path such as photos.pages
        head, tail = name.split(".", 1)
        if isinstance(payload.get(head), dict):
            payload[head].pop(tail, None)
        return
    photos = payload.get("photos", {}).get("photo", []) if isinstance(payload.get("photos"), dict) else []
    for entry in photos:
        if photo_id is None or entry.get("id") == photo_id:
            entry.pop(name, None)


class _Handler(BaseHTTPRequestHandler):
    owner: FlickrTestServer
    timeout = 10  # a stuck client cannot hold a server thread for ever

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
        pass

    def reply(
        self,
        status: int,
        body: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
        content_length: int | None = None,
    ) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body) if content_length is None else content_length))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a time-out test): nothing to answer

    def do_POST(self) -> None:
        if urlsplit(self.path).path == "/services/rest/":
            self.owner.handle_rest(self)
        else:
            self.reply(404, b"not found", "text/plain")

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/services/rest/":
            self.owner.handle_rest(self)
        elif path.startswith("/images/"):
            self.owner.handle_image(self)
        else:
            self.reply(404, b"not found", "text/plain")


@pytest.fixture()
def flickr_server(openclipart_sample: Path) -> Iterator[FlickrTestServer]:
    """A started server over the openclipart sample, stopped after the test."""
    with FlickrTestServer(openclipart_sample) as server:
        yield server




class FakeTime:
    """An injected clock: ``sleep`` records the wait and moves ``clock`` forward at once."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert 0 <= seconds <= 7200, f"an implausible wait of {seconds}s"
        self.sleeps.append(seconds)
        self.now += seconds


def dagster_environment(home, server: "FlickrTestServer", retry_base_delay_s: float | None = None) -> dict[str, str]:
    """The environment of a ``dagster`` subprocess that crawls ``server`` into the data home
    ``home`` (its instance in ``home/dagster``): test key and secret, no real rate limit."""
    import os
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "DAGSTER_HOME": str(Path(home) / "dagster"),
        "TAGREC_HOME": str(home),
        "PYTHONPATH": str(repo),
        "FLICKR_API_KEY": TEST_KEY,
        "FLICKR_API_SECRET": TEST_SECRET,
        "FLICKR_REST_URL": server.rest_url,
        "FLICKR_CALLS_PER_HOUR": str(10**7),
    }
    if retry_base_delay_s is not None:
        env["FLICKR_RETRY_BASE_DELAY_S"] = str(retry_base_delay_s)
    return env
