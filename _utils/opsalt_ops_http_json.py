"""
The asset-API client behind the ``ops_http_json`` ext_pillar and the
``ops_http_json`` runner (formerly ``opsalt_http``: that import still works,
hands back this module and logs a deprecation warning).

One :class:`AssetApiClient` is built per master process and per distinct
configuration; it owns a keep-alive ``requests.Session`` (urllib3's pool is
thread-safe), the retry policy, the credentials (read from files at call
time), the response checks and the last-good-document cache. What the
master's processes share (the circuit breaker and the request slots of each
endpoint) lives in ``opsalt_ops_http_json_breaker``, in files under the cache
dir.
``ext_pillar()`` in ``_pillar/ops_http_json.py`` is only the door.

A fetch, in order:

1. the breaker of the URL's endpoint admits it, or it is answered at once
   from the cache (``on_error: stale``) or fails at once;
2. it runs on a daemon thread: a request slot (``max_concurrency``), then
   the GET (conditional on the cached copy's ``ETag``/``Last-Modified``),
   bounded by ``timeout`` and ``deadline``; its outcome updates the cache
   and the breaker, whether or not anyone still waits for it;
3. the caller waits for it in full when it has no usable cached copy, and
   at most ``stale_grace`` seconds when it has one (stale-while-revalidate).
"""

import collections
import concurrent.futures
import hashlib
import json
import logging
import os
import queue
import re
import threading
import time
import urllib.parse

import opsalt_files
import opsalt_ops_http_json_breaker
import opsalt_validate
import opsalt_wait
import requests
from opsalt_secrets import REDACTED, redact_text, redact_url
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ReadTimeoutError
from urllib3.util.retry import Retry

try:
    import opsalt_monitoring
except ImportError:  # pragma: no cover - metrics are optional, pillar is not
    opsalt_monitoring = None

log = logging.getLogger(__name__)

DEFAULTS = {
    "url": None,
    "username": None,
    "password": None,
    "password_file": None,
    "token": None,
    "token_file": None,
    "headers": {},
    "verify": True,
    "cert": None,
    "timeout": [3.05, 10],
    "deadline": 15,
    "retries": 2,
    "backoff_factor": 0.2,
    "namespace": None,
    "max_bytes": 10 * 1024 * 1024,
    "missing": "empty",
    "on_error": "stale",
    "max_stale": 24 * 3600,
    "schema": None,
    "cache_dir": None,
    # fleet scale (issue 13)
    "stale_grace": 1.0,
    "max_concurrency": 4,
    "slot_wait": 0.25,
    "breaker_failures": 3,
    "breaker_cooloff": 30,
    "breaker_cooloff_max": 30,
    "conditional": True,
    "meta_key": None,
    # Salt's removed http_json, by its option names
    "with_grains": False,
    "allow_url_without_minion_id": False,
    "header_dict": None,
    "auth": None,
}

ON_ERROR_CHOICES = ("stale", "fail", "empty")
MISSING_CHOICES = ("empty", "error")
# Retried by urllib3, honouring Retry-After (429 and 503 carry it).
RETRY_STATUSES = (429, 502, 503, 504)
CHUNK = 64 * 1024
GRAIN_PLACEHOLDER = re.compile(r"<([^<>]+)>")
CACHE_MARK = "__opsalt_cache__"
# A stale serve logs a warning at most this often per client and process;
# the warning says how many were served since the last one.
STALE_LOG_INTERVAL = 60.0
PROBE_POLL = 0.05


class AssetApiError(Exception):
    """
    A fetch failed. The message is safe to show: it names the minion and the
    URL with credentials redacted, never a password, token or header.
    ``outage`` is true for the failures the circuit breaker counts
    (connection errors, timeouts, the deadline, HTTP 5xx and 429); ``reason``
    is a short safe text for the breaker's log line.
    """

    def __init__(self, message, outage=False, reason=None):
        super().__init__(message)
        self.outage = outage
        self.reason = reason


class ConfigError(AssetApiError):
    """
    The ``ops_http_json`` configuration itself is wrong.
    """


class CappedRetry(Retry):
    """
    urllib3's ``Retry`` with ``Retry-After`` capped: a server asking for an
    hour must not hold a thread for an hour (the deadline ends the fetch).
    """

    MAX_RETRY_AFTER = 5.0

    def get_retry_after(self, response):
        value = super().get_retry_after(response)
        return None if value is None else min(value, self.MAX_RETRY_AFTER)


def _as_timeout(value):
    if isinstance(value, (int, float)):
        return (float(value), float(value))
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return (float(value[0]), float(value[1]))
    raise ConfigError("timeout must be seconds or [connect, read] seconds")


def _merge_http_json_options(conf):
    """
    Map Salt ``http_json``'s option names onto opsalt's.
    """
    header_dict = conf.pop("header_dict")
    if header_dict is not None:
        if not isinstance(header_dict, dict):
            raise ConfigError("header_dict must be a mapping")
        conf["headers"] = dict(header_dict, **conf["headers"])
    auth = conf.pop("auth")
    if auth is not None:
        if not (isinstance(auth, (list, tuple)) and len(auth) == 2):
            raise ConfigError("auth must be [username, password]")
        if conf["username"] or conf["password"] or conf["password_file"]:
            raise ConfigError("give auth or username/password, not both")
        conf["username"], conf["password"] = str(auth[0]), str(auth[1])


def _check_url(conf):
    url = conf["url"]
    if not isinstance(url, str):
        raise ConfigError("url must be a string containing %s for the minion id")
    if "%s" not in url:
        if not conf["with_grains"]:
            raise ConfigError("url must be a string containing %s for the minion id")
        if not conf["allow_url_without_minion_id"]:
            raise ConfigError(
                "url uses grains but no %s: grains are set by the minion itself, so without the "
                "authenticated minion id a minion could read another host's document; add %s, or "
                "set allow_url_without_minion_id: true if every grain in the URL is trusted"
            )
    probe = GRAIN_PLACEHOLDER.sub("x", url.replace("%s", "x"))
    if urllib.parse.urlsplit(probe).scheme not in ("http", "https"):
        raise ConfigError("url must be http:// or https://")


def _check_numbers(conf):
    for key in (
        "deadline",
        "max_bytes",
        "max_stale",
        "retries",
        "stale_grace",
        "slot_wait",
        "breaker_cooloff",
        "breaker_cooloff_max",
    ):
        if isinstance(conf[key], bool) or not isinstance(conf[key], (int, float)) or conf[key] < 0:
            raise ConfigError(f"{key} must be a non-negative number")
    for key in ("max_concurrency", "breaker_failures"):
        if isinstance(conf[key], bool) or not isinstance(conf[key], int) or conf[key] < 0:
            raise ConfigError(f"{key} must be a non-negative integer (0 turns it off)")


def normalise_config(options):
    """
    Merge ``options`` over :data:`DEFAULTS` and check them. Raises
    :class:`ConfigError` naming the bad option (never its secret value).
    """
    unknown = set(options) - set(DEFAULTS)
    if unknown:
        raise ConfigError(f"unknown ops_http_json option(s): {', '.join(sorted(unknown))}")
    conf = dict(DEFAULTS)
    conf.update({k: v for k, v in options.items() if v is not None})
    if not isinstance(conf["headers"], dict):
        raise ConfigError("headers must be a mapping")
    _merge_http_json_options(conf)
    _check_url(conf)
    if conf["on_error"] not in ON_ERROR_CHOICES:
        raise ConfigError(f"on_error must be one of {', '.join(ON_ERROR_CHOICES)}")
    if conf["missing"] not in MISSING_CHOICES:
        raise ConfigError(f"missing must be one of {', '.join(MISSING_CHOICES)}")
    if conf["password"] is not None and conf["password_file"] is not None:
        raise ConfigError("give password or password_file, not both")
    if conf["token"] is not None and conf["token_file"] is not None:
        raise ConfigError("give token or token_file, not both")
    if (conf["password"] or conf["password_file"]) and not conf["username"]:
        raise ConfigError("password/password_file needs username")
    if conf["meta_key"] is not None and (not isinstance(conf["meta_key"], str) or not conf["meta_key"]):
        raise ConfigError("meta_key must be a non-empty string")
    conf["timeout"] = _as_timeout(conf["timeout"])
    _check_numbers(conf)
    return conf


def _grain(grains, name):
    value = grains
    for part in name.split(":"):
        if hasattr(value, "keys"):  # a dict, or the loader's grains wrapper
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def minion_url(template, minion_id, grains=None):
    """
    ``template`` with ``%s`` replaced by the minion id percent-encoded with no
    safe characters (``/``, ``?``, ``#``, ``%``, ``@``, ``:``, spaces and
    non-ASCII all encoded). With ``grains`` (a mapping), each ``<name>``
    (``:`` nests) is replaced the same way by that grain's value; a grain
    that is missing or empty raises :class:`KeyError` naming it.
    """
    url = template.replace("%s", urllib.parse.quote(str(minion_id), safe=""))
    if grains is None:
        return url

    def substitute(match):
        value = _grain(grains, match.group(1))
        if value in (None, "", [], {}):
            raise KeyError(match.group(1))
        return urllib.parse.quote(str(value), safe="")

    return GRAIN_PLACEHOLDER.sub(substitute, url)


def _read_secret_file(path, what):
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError as err:
        # the cause holds only the path and the errno text: no secret
        raise ConfigError(f"cannot read {what} file {path}: {err.strerror}") from err


def utc_stamp(epoch):
    """
    ISO 8601 UTC to the second, or ``None``.
    """
    return None if epoch is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


class FetchResult(dict):
    """
    What a fetch returned: ``document`` (dict or None), ``source`` (``api``,
    ``cache``, ``missing``, ``empty``), ``error`` (str or None),
    ``cache_age`` (seconds since the API last confirmed the cached copy, or
    None), ``fetched_at`` (when this version of the document was received,
    UTC), ``status`` (``200``, ``304``, ``404`` or None), ``breaker``
    (the endpoint breaker's state) and ``schema`` (``valid``, ``invalid``,
    ``not configured``).
    """


# ``status``: the HTTP status that produced the entry (200 or 304), None when
# read from the cache.
CacheEntry = collections.namedtuple(
    "CacheEntry", "document age etag last_modified received_at status", defaults=(None,)
)
Answer = collections.namedtuple("Answer", "status document etag last_modified")


class AssetApiClient:
    """
    Client for one ``ops_http_json`` configuration. Thread-safe.
    """

    def __init__(self, options, cachedir):
        self.conf = normalise_config(options)
        self.timeout = self.conf["timeout"]
        self.session = self._build_session()
        base = os.path.join(cachedir, "opsalt", "ops_http_json")
        # the master's pillar metrics (opsalt_monitoring), read by monitoring's ``master`` collector
        self.metrics_dir = opsalt_monitoring.pillar_store_dir(cachedir) if opsalt_monitoring else None
        self.cache_dir = self.conf["cache_dir"] or os.path.join(
            base, hashlib.sha256(self.conf["url"].encode()).hexdigest()[:16]
        )
        # per endpoint, shared by every configuration and process of this master
        self.state_dir = os.path.join(base, "endpoints")
        self._schema_validator = None
        self._schema_lock = threading.Lock()
        self._lock = threading.Lock()
        self._inflight = {}  # minion id -> Future of its running fetch
        self._endpoints = {}
        self._stale_count = 0
        self._stale_logged_at = None

    # -- set-up -------------------------------------------------------------

    def _build_session(self):
        conf = self.conf
        session = requests.Session()
        session.trust_env = False  # no proxies or netrc from the master's environment
        retry = CappedRetry(
            total=None,
            connect=conf["retries"],
            read=0,
            other=0,
            status=conf["retries"],
            status_forcelist=RETRY_STATUSES,
            allowed_methods=frozenset(["GET"]),
            backoff_factor=conf["backoff_factor"],
            respect_retry_after_header=True,
            raise_on_status=False,
            redirect=0,
        )
        adapter = HTTPAdapter(max_retries=retry, pool_connections=4, pool_maxsize=32)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.verify = conf["verify"]
        if conf["cert"]:
            session.cert = tuple(conf["cert"]) if isinstance(conf["cert"], list) else conf["cert"]
        session.headers.update({"Accept": "application/json"})
        return session

    def endpoint(self, url):
        """
        ``(breaker, slots)`` of ``url``'s endpoint.
        """
        name = opsalt_ops_http_json_breaker.endpoint_of(url)
        with self._lock:
            found = self._endpoints.get(name)
            if found is None:
                conf = self.conf
                breaker = opsalt_ops_http_json_breaker.Breaker(
                    self.state_dir,
                    name,
                    failures=conf["breaker_failures"],
                    cooloff=conf["breaker_cooloff"],
                    cooloff_max=conf["breaker_cooloff_max"],
                    lease=self._longest_fetch() + 5,
                )
                slots = opsalt_ops_http_json_breaker.Slots(self.state_dir, name, conf["max_concurrency"])
                found = self._endpoints[name] = (breaker, slots)
            return found

    def _longest_fetch(self):
        return max(self.conf["slot_wait"], self.conf["deadline"]) + self.conf["deadline"] + 0.1

    def _secrets(self):
        """
        Every credential value currently configured, for redaction.
        """
        found = [self.conf["password"], self.conf["token"]]
        for key in ("password_file", "token_file"):
            if self.conf[key]:
                try:
                    found.append(_read_secret_file(self.conf[key], key))
                except ConfigError:
                    pass
        found.extend(str(v) for v in self.conf["headers"].values())
        return [s for s in found if s]

    def _request_kwargs(self):
        conf = self.conf
        headers = {str(k): str(v) for k, v in conf["headers"].items()}
        auth = None
        if conf["username"]:
            password = conf["password"]
            if conf["password_file"]:
                password = _read_secret_file(conf["password_file"], "password_file")
            auth = (conf["username"], password or "")
        token = conf["token"]
        if conf["token_file"]:
            token = _read_secret_file(conf["token_file"], "token_file")
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return {"headers": headers, "auth": auth}

    # -- fetching -----------------------------------------------------------

    def url_for(self, minion_id, grains=None):
        """
        The minion's URL; ``grains`` fill ``<grain>`` placeholders when
        ``with_grains`` is on.
        """
        if not self.conf["with_grains"]:
            return minion_url(self.conf["url"], minion_id)
        try:
            return minion_url(self.conf["url"], minion_id, grains or {})
        except KeyError as err:
            raise self._error(minion_id, f"grain {err.args[0]!r} of the url is missing or empty") from None

    def safe_url(self, minion_id, url=None):
        """
        The minion's URL with credentials redacted, for messages.
        """
        if url is None:
            url = minion_url(self.conf["url"], minion_id)
        return redact_url(url)

    def _error(self, minion_id, message, url=None, outage=False, reason=None):
        text = f"ops_http_json: {minion_id}: {self.safe_url(minion_id, url)}: {message}"
        return AssetApiError(redact_text(text, self._secrets()), outage=outage, reason=reason)

    def fetch_document(self, minion_id, url=None):
        """
        GET the minion's document, bypassing breaker, slots and cache.
        Returns the dict, ``None`` for 404, or raises :class:`AssetApiError`.
        """
        return self._fetch_bounded(minion_id, url or self.url_for(minion_id), None).document

    def _fetch_bounded(self, minion_id, url, cached):
        """
        One fetch as an :class:`Answer`, bounded by ``deadline`` seconds even
        if the server drips bytes.
        """
        deadline = self.conf["deadline"]
        future = _executor("http").submit(
            self._fetch_once, minion_id, url, cached, opsalt_wait.Deadline(deadline)
        )
        try:
            return future.result(timeout=deadline + 0.05)
        except concurrent.futures.TimeoutError:
            # The HTTP thread is abandoned (it ends with the server's drip);
            # this thread is free now.
            raise self._error(
                minion_id,
                f"no complete answer within the {deadline} s deadline",
                url,
                outage=True,
                reason="deadline",
            ) from None

    def _conditional_headers(self, cached):
        if not (self.conf["conditional"] and cached):
            return {}
        headers = {}
        if cached.etag:
            headers["If-None-Match"] = cached.etag
        if cached.last_modified:
            headers["If-Modified-Since"] = cached.last_modified
        return headers

    def _get(self, minion_id, url, cached):
        kwargs = self._request_kwargs()
        kwargs["headers"].update(self._conditional_headers(cached))
        origin = urllib.parse.urlsplit(url)[:2]
        for _hop in range(4):
            response = self.session.get(
                url, timeout=self.timeout, stream=True, allow_redirects=False, **kwargs
            )
            if not response.is_redirect:
                return response
            target = urllib.parse.urljoin(url, response.headers.get("Location", ""))
            response.close()
            if urllib.parse.urlsplit(target)[:2] != origin:
                raise self._error(
                    minion_id,
                    f"redirected to another origin ({redact_url(target)}); not followed, "
                    "so no credential leaves the configured host",
                    url,
                )
            url = target
        raise self._error(minion_id, "too many redirects", url)

    def _fetch_once(self, minion_id, url, cached, deadline):
        try:
            with self._get(minion_id, url, cached) as response:
                return self._read_response(minion_id, url, response, deadline)
        except AssetApiError:
            raise
        except requests.exceptions.RequestException as err:
            # not chained: a requests exception carries the request with its
            # Authorization header
            raise self._transport_error(minion_id, url, err) from None

    def _transport_error(self, minion_id, url, err):
        """
        The :class:`AssetApiError` for a ``requests`` exception. A read
        timeout says so even when urllib3's ``Retry`` wrapped it into "Max
        retries exceeded".
        """
        reason = getattr(err.args[0], "reason", None) if err.args else None
        if isinstance(err, requests.exceptions.SSLError):
            return self._error(minion_id, f"TLS verification failed: {_short(err)}", url)
        if isinstance(err, requests.exceptions.ConnectTimeout):
            return self._error(
                minion_id, f"connect timed out after {self.timeout[0]} s", url, True, "connect timeout"
            )
        if isinstance(err, requests.exceptions.ReadTimeout) or isinstance(reason, ReadTimeoutError):
            return self._error(
                minion_id, f"no answer within the {self.timeout[1]} s read timeout", url, True, "read timeout"
            )
        if isinstance(err, requests.exceptions.ConnectionError):
            return self._error(minion_id, f"connection failed: {_short(err)}", url, True, "connection failed")
        return self._error(minion_id, f"request failed: {type(err).__name__}", url)

    def _read_response(self, minion_id, url, response, deadline):
        status = response.status_code
        validators = (response.headers.get("ETag"), response.headers.get("Last-Modified"))
        if status == 404:
            return Answer(404, None, None, None)
        if status == 304 and self._conditional_headers_sent(response):
            return Answer(304, None, *validators)
        if status in (401, 403):
            raise self._error(
                minion_id,
                f"authentication failed (HTTP {status}); check username/password_file or token_file",
                url,
            )
        if status != 200:
            outage = status >= 500 or status == 429
            raise self._error(
                minion_id, f"HTTP {status} {response.reason or ''}".rstrip(), url, outage, f"HTTP {status}"
            )
        document = self._parse_body(minion_id, url, self._read_body(minion_id, url, response, deadline))
        self.validate(minion_id, document)
        return Answer(200, document, *validators)

    @staticmethod
    def _conditional_headers_sent(response):
        sent = response.request.headers
        return "If-None-Match" in sent or "If-Modified-Since" in sent

    def _read_body(self, minion_id, url, response, deadline):
        limit = self.conf["max_bytes"]
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise self._error(minion_id, f"body of {declared} bytes exceeds max_bytes ({limit})", url)
        body = bytearray()
        for chunk in response.iter_content(CHUNK):
            body.extend(chunk)
            if len(body) > limit:
                raise self._error(minion_id, f"body exceeds max_bytes ({limit})", url)
            if deadline.passed():
                raise self._error(
                    minion_id,
                    f"body still arriving at the {self.conf['deadline']} s deadline",
                    url,
                    outage=True,
                    reason="deadline",
                )
        return bytes(body)

    def _parse_body(self, minion_id, url, body):
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise self._error(minion_id, "body is not UTF-8", url) from None
        try:
            document = json.loads(text)
        except ValueError as err:
            raise self._error(
                minion_id, f"body is not valid JSON ({err.msg} at line {err.lineno})", url
            ) from None
        if not isinstance(document, dict):
            raise self._error(minion_id, f"JSON is a {type(document).__name__}, expected an object", url)
        return document

    # -- schema -------------------------------------------------------------

    def _validator(self):
        with self._schema_lock:
            if self._schema_validator is None:
                path = self.conf["schema"]
                try:
                    with open(path, encoding="utf-8") as handle:
                        schema = json.load(handle)
                except (OSError, ValueError) as err:
                    raise ConfigError(f"cannot load schema {path}: {err}") from err
                self._schema_validator = opsalt_validate.schema_validator(schema)
            return self._schema_validator

    def validate(self, minion_id, document):
        """
        Check ``document`` against the configured schema; raises with the
        failing JSON pointer.
        """
        if not self.conf["schema"]:
            return
        error = next(iter(sorted(self._validator().iter_errors(document), key=lambda e: e.path)), None)
        if error is not None:
            pointer = "/" + "/".join(str(p) for p in error.absolute_path)
            raise self._error(minion_id, f"schema violation at {pointer}: {_short(error.message, 200)}")

    # -- cache --------------------------------------------------------------

    def _cache_path(self, minion_id):
        return os.path.join(self.cache_dir, urllib.parse.quote(str(minion_id), safe="") + ".json")

    def cache_store(self, minion_id, document, etag=None, last_modified=None, previous=None):
        """
        Save the last good document with its validators (mode 0600, atomic)
        and return its :class:`CacheEntry`. The file's mtime is the time the
        API last confirmed it; an unchanged document (or a 304) only touches
        the file, so the hot path costs no write. ``received_at`` is when
        this version of the document first arrived.
        """
        path = self._cache_path(minion_id)
        same = previous is not None and previous.document == document
        if same and (previous.etag, previous.last_modified) == (etag, last_modified):
            try:
                os.utime(path)
                return previous._replace(age=0.0)
            except FileNotFoundError:
                pass
        received_at = previous.received_at if same else time.time()
        record = {
            CACHE_MARK: 2,
            "document": document,
            "etag": etag,
            "last_modified": last_modified,
            "received_at": received_at,
        }
        os.makedirs(self.cache_dir, mode=0o700, exist_ok=True)
        opsalt_files.atomic_write(
            path, json.dumps(record, sort_keys=True), mode=0o600, make_backup=False, durable=False
        )
        return CacheEntry(document, 0.0, etag, last_modified, received_at)

    def cache_load(self, minion_id):
        """
        The minion's :class:`CacheEntry`, or ``None``. Files of earlier
        releases (the bare document) read as entries without validators.
        """
        path = self._cache_path(minion_id)
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
            mtime = os.stat(path).st_mtime
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict):
            return None
        age = max(0.0, time.time() - mtime)
        if data.get(CACHE_MARK) == 2 and isinstance(data.get("document"), dict):
            return CacheEntry(
                data["document"], age, data.get("etag"), data.get("last_modified"), data.get("received_at")
            )
        return CacheEntry(data, age, None, None, mtime)

    def cache_entries(self):
        """
        ``{minion_id: age_seconds}`` for every cached document.
        """
        ages = {}
        try:
            names = os.listdir(self.cache_dir)
        except FileNotFoundError:
            return ages
        for name in names:
            if name.endswith(".json"):
                minion_id = urllib.parse.unquote(name[: -len(".json")])
                entry = self.cache_load(minion_id)
                if entry is not None:
                    ages[minion_id] = entry.age
        return ages

    # -- one fetch, in the background -----------------------------------------

    def _job(self, minion_id, url, cached, token, has_copy):
        """
        Runs on a daemon thread: slot, GET, then the cache and the breaker.
        Returns the new :class:`CacheEntry`, or ``None`` for 404.
        """
        breaker, slots = self.endpoint(url)
        wait = self.conf["slot_wait"] if has_copy else self.conf["deadline"]
        slot = slots.acquire(wait)
        if slot is None:
            breaker.give_back(token)
            raise self._error(
                minion_id,
                f"all {slots.count} request slots toward the API busy for {wait} s (max_concurrency)",
                url,
            )
        try:
            answer = self._fetch_bounded(minion_id, url, cached)
        except ConfigError:
            raise
        except AssetApiError as err:
            if err.outage:
                breaker.failure(err.reason, token)
            else:
                breaker.success(token)  # the API answered; the fault is this document's
            raise
        finally:
            slots.release(slot)
        breaker.success(token)
        return self._record(minion_id, answer, cached)

    def _record(self, minion_id, answer, cached):
        if answer.status == 404:
            return None
        document = answer.document
        if answer.status == 304:
            document = cached.document
            self.validate(minion_id, document)  # the schema may have changed since
        try:
            entry = self.cache_store(minion_id, document, answer.etag, answer.last_modified, cached)
        except OSError as err:
            log.warning("ops_http_json: %s: cannot write cache: %s", minion_id, err.strerror)
            entry = CacheEntry(document, 0.0, answer.etag, answer.last_modified, time.time())
        return entry._replace(status=answer.status)

    def _start(self, minion_id, url, cached, token, has_copy):
        """
        The running fetch of ``minion_id`` in this process, started if there
        is none (a minion that re-sends its request joins the first one).
        """
        with self._lock:
            future = self._inflight.get(minion_id)
            if future is not None and not future.done():
                joined = True
            else:
                joined = False
                future = _executor("jobs").submit(self._job, minion_id, url, cached, token, has_copy)
                self._inflight[minion_id] = future
                future.add_done_callback(lambda done, key=minion_id: self._finished(key, done))
        if joined:
            self.endpoint(url)[0].give_back(token)
        return future

    def _finished(self, minion_id, future):
        with self._lock:
            if self._inflight.get(minion_id) is future:
                del self._inflight[minion_id]

    # -- the policy ---------------------------------------------------------

    def fetch(self, minion_id, grains=None, bypass_breaker=False):
        """
        Fetch with the full policy applied; never raises for API errors.
        Returns a :class:`FetchResult`.
        """
        result = FetchResult(document=None, source=None, error=None, cache_age=None, fetched_at=None)
        result.update(status=None, schema="configured" if self.conf["schema"] else "not configured")
        cached = self.cache_load(minion_id)
        try:
            url = self.url_for(minion_id, grains)
        except AssetApiError as err:
            return self._on_error(result, err, cached)
        breaker = self.endpoint(url)[0]
        if bypass_breaker:
            verdict, token = opsalt_ops_http_json_breaker.PASS, opsalt_ops_http_json_breaker.BYPASS
        else:
            verdict, token = self._admit(breaker)
        if verdict == opsalt_ops_http_json_breaker.BLOCKED:
            breaker.note_blocked()
            state = breaker.read()
            err = self._error(
                minion_id,
                f"circuit breaker for {breaker.endpoint} is {state['state']} ({state['reason']}); "
                "the API was not contacted",
                url,
            )
            return self._on_error(result, err, cached)
        has_copy = self._usable(cached)
        future = self._start(minion_id, url, cached, token, has_copy)
        wait = self.conf["stale_grace"] if has_copy else self._longest_fetch()
        try:
            entry = future.result(timeout=wait)
        except concurrent.futures.TimeoutError:
            message = (
                f"no answer within stale_grace ({self.conf['stale_grace']} s); the fetch goes on in the background"
                if has_copy
                else f"no complete answer within the {self.conf['deadline']} s deadline"
            )
            return self._on_error(result, self._error(minion_id, message, url), cached)
        except ConfigError:
            raise
        except AssetApiError as err:
            return self._on_error(result, err, cached)
        return self._fresh(result, minion_id, url, entry)

    def _admit(self, breaker):
        """
        The breaker's verdict. While another worker probes, wait up to
        ``stale_grace`` for its outcome, so a recovered API serves fresh
        documents to everyone in the same refresh.
        """
        verdict, token = breaker.admit()
        if (
            verdict != opsalt_ops_http_json_breaker.BLOCKED
            or breaker.read()["state"] != opsalt_ops_http_json_breaker.HALF_OPEN
        ):
            return verdict, token
        latest = [(verdict, token)]

        def settled():
            latest[0] = breaker.admit()
            return (
                latest[0][0] != opsalt_ops_http_json_breaker.BLOCKED
                or breaker.read()["state"] == opsalt_ops_http_json_breaker.OPEN
            )

        opsalt_wait.until(settled, self.conf["stale_grace"], interval=PROBE_POLL, max_interval=PROBE_POLL)
        return latest[0]

    def _usable(self, cached):
        return (
            self.conf["on_error"] == "stale" and cached is not None and cached.age <= self.conf["max_stale"]
        )

    def _fresh(self, result, minion_id, url, entry):
        if entry is None:
            if self.conf["missing"] == "error":
                error = self._error(minion_id, "unknown host (HTTP 404) and missing: error", url)
                return self._on_error(result, error, self.cache_load(minion_id))
            result.update(document={}, source="missing", status=404)
            return result
        result.update(
            document=entry.document, source="api", cache_age=0.0, fetched_at=utc_stamp(entry.received_at)
        )
        result["status"] = entry.status or 200
        if self.conf["schema"]:
            result["schema"] = "valid"
        return result

    def _on_error(self, result, error, cached):
        result["error"] = str(error)
        policy = self.conf["on_error"]
        if policy == "empty":
            result.update(document={}, source="empty")
        elif policy == "stale" and cached is not None:
            result["cache_age"] = cached.age
            if cached.age <= self.conf["max_stale"]:
                result.update(
                    document=cached.document, source="cache", fetched_at=utc_stamp(cached.received_at)
                )
        return result

    def pillar(self, minion_id, grains=None):
        """
        The pillar for ``minion_id`` per ``on_error``; raises
        :class:`AssetApiError` when the policy says the call must fail.
        Every call is counted in the master's pillar metrics with its
        outcome (:func:`served_outcome`) and duration.
        """
        started = time.monotonic()
        outcome = "error"  # unless a document is served
        try:
            result = self.fetch(minion_id, grains)
            document = self._document(result)
            outcome = served_outcome(result)
            return document
        finally:
            self._record_metrics(minion_id, outcome, time.monotonic() - started)

    def _document(self, result):
        """
        The pillar a :class:`FetchResult` gives, or :class:`AssetApiError`.
        """
        if result["document"] is None:
            message = result["error"]
            if self.conf["on_error"] == "stale":
                message += f"; no cached copy younger than max_stale ({self.conf['max_stale']} s)"
            raise AssetApiError(message)
        if result["source"] == "cache":
            self._log_stale(result)
        elif result["source"] == "empty":
            log.warning("%s; on_error is 'empty', serving {}", result["error"])
        document = result["document"]
        if self.conf["namespace"]:
            document = {self.conf["namespace"]: document}
        if self.conf["meta_key"]:
            document = dict(document)
            document[self.conf["meta_key"]] = {
                "stale": result["source"] in ("cache", "empty"),
                "fetched_at": result["fetched_at"],
                "source": result["source"],
            }
        return document

    def _record_metrics(self, minion_id, outcome, seconds):
        """
        Count one served fetch in the master's pillar metrics store. Metrics
        never break a pillar fetch: a failure is logged at debug level (no
        secret: the store holds none) and the count is lost.
        """
        if self.metrics_dir is None:
            return
        try:
            opsalt_monitoring.PillarMetricsStore(self.metrics_dir).record(outcome, seconds, minion_id)
        except Exception as err:  # anything: the pillar is served either way
            detail = err.strerror if isinstance(err, OSError) and err.strerror else _short(err, 200)
            log.debug(
                "ops_http_json: %s: pillar metrics not recorded in %s: %s: %s",
                minion_id,
                self.metrics_dir,
                type(err).__name__,
                detail,
            )

    def _log_stale(self, result):
        """
        One warning per :data:`STALE_LOG_INTERVAL` per process, with the
        count; the other stale serves log at debug level.
        """
        now = time.monotonic()
        with self._lock:
            self._stale_count += 1
            due = self._stale_logged_at is None or now - self._stale_logged_at >= STALE_LOG_INTERVAL
            if due:
                count, self._stale_count, self._stale_logged_at = self._stale_count, 0, now
        if not due:
            log.debug("%s; serving the cached document from %.0f s ago", result["error"], result["cache_age"])
            return
        log.warning(
            "%s; serving the cached document from %.0f s ago "
            "(%d stale serve(s) by this process since the last such warning; the rest log at debug level)",
            result["error"],
            result["cache_age"],
            count,
        )


def served_outcome(result):
    """
    The ``result`` label of ``opsalt_pillar_fetch_total`` for a
    :class:`FetchResult` that was served: ``ok`` (the API's document),
    ``not_modified`` (the API confirmed the cached copy with a 304),
    ``missing`` (404 with ``missing: empty``), ``stale`` (the cached copy
    after a failure) and ``error`` (``on_error: empty`` served ``{}``). A
    fetch that raises instead is ``error`` too.
    """
    source = result["source"]
    if source == "api":
        return "not_modified" if result["status"] == 304 else "ok"
    return {"cache": "stale", "missing": "missing"}.get(source, "error")


def _short(value, limit=300):
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "..."


_CLIENTS = {}
_CLIENTS_LOCK = threading.Lock()
_EXECUTORS = {}
# Fetches run on pools of daemon threads: a caller can stop waiting at its
# deadline (or at stale_grace) while the fetch goes on; the pools bound how
# many such fetches can pile up in one process.
FETCH_THREADS = 32


class DaemonPool:
    """
    A bounded pool of daemon threads with ``submit() -> Future``, like
    ``ThreadPoolExecutor``, except that the interpreter does not wait for its
    threads at exit: a fetch abandoned at its deadline (a server dripping
    headers for minutes) cannot hold a salt process open.
    """

    def __init__(self, max_workers, name):
        self.max_workers = max_workers
        self.name = name
        self._tasks = queue.SimpleQueue()
        self._threads = []
        self._idle = 0
        self._lock = threading.Lock()

    def submit(self, func, *args):
        future = concurrent.futures.Future()
        self._tasks.put((future, func, args))
        with self._lock:
            if self._idle > 0:
                self._idle -= 1  # a waiting thread takes it
            elif len(self._threads) < self.max_workers:
                thread = threading.Thread(
                    target=self._work, name=f"{self.name}_{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
        return future

    def _work(self):
        while True:
            future, func, args = self._tasks.get()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(func(*args))
                except BaseException as err:
                    future.set_exception(err)
            with self._lock:
                self._idle += 1


def _executor(kind):
    """
    The process's pool for ``kind``: ``jobs`` (a whole fetch with its slot
    and bookkeeping) or ``http`` (the GET itself, abandoned at the deadline).
    """
    key = (os.getpid(), kind)  # threads do not survive the master's fork into workers
    with _CLIENTS_LOCK:
        pool = _EXECUTORS.get(key)
        if pool is None:
            pool = _EXECUTORS[key] = DaemonPool(FETCH_THREADS, f"ops_http_json_{kind}")
        return pool


def client_for(options, cachedir):
    """
    The shared :class:`AssetApiClient` for these options in this process
    (built once per process, so forked master workers do not share sockets).
    """
    key = (os.getpid(), cachedir, json.dumps(options, sort_keys=True, default=str))
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(key)
        if client is None:
            client = _CLIENTS[key] = AssetApiClient(options, cachedir)
        return client


__all__ = [
    "AssetApiClient",
    "AssetApiError",
    "ConfigError",
    "REDACTED",
    "client_for",
    "minion_url",
    "normalise_config",
    "served_outcome",
]
