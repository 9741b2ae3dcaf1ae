"""
The asset-API client behind the ``ops_http_json`` ext_pillar and the
``ops_pillar`` runner.

One :class:`AssetApiClient` is built per master process and per distinct
configuration; it owns a keep-alive ``requests.Session`` (urllib3's pool is
thread-safe), the retry policy, the credentials (read from files at call
time), the response checks and the last-good-document cache.
``ext_pillar()`` in ``_pillar/ops_http_json.py`` is only the door.
"""

import concurrent.futures
import hashlib
import json
import logging
import os
import queue
import threading
import time
import urllib.parse

import opsalt_files
import requests
from opsalt_secrets import REDACTED, redact_text, redact_url
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

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
}

ON_ERROR_CHOICES = ("stale", "fail", "empty")
MISSING_CHOICES = ("empty", "error")
RETRY_STATUSES = (502, 503, 504)
CHUNK = 64 * 1024


class AssetApiError(Exception):
    """
    A fetch failed. The message is safe to show: it names the minion and the
    URL with credentials redacted, never a password, token or header.
    """


class ConfigError(AssetApiError):
    """
    The ``ops_http_json`` configuration itself is wrong.
    """


def _as_timeout(value):
    if isinstance(value, (int, float)):
        return (float(value), float(value))
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return (float(value[0]), float(value[1]))
    raise ConfigError("timeout must be seconds or [connect, read] seconds")


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
    url = conf["url"]
    if not isinstance(url, str) or "%s" not in url:
        raise ConfigError("url must be a string containing %s for the minion id")
    if urllib.parse.urlsplit(url.replace("%s", "x")).scheme not in ("http", "https"):
        raise ConfigError("url must be http:// or https://")
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
    if not isinstance(conf["headers"], dict):
        raise ConfigError("headers must be a mapping")
    conf["timeout"] = _as_timeout(conf["timeout"])
    for key in ("deadline", "max_bytes", "max_stale", "retries"):
        if not isinstance(conf[key], (int, float)) or conf[key] < 0:
            raise ConfigError(f"{key} must be a non-negative number")
    return conf


def minion_url(template, minion_id):
    """
    ``template`` with ``%s`` replaced by the minion id percent-encoded with no
    safe characters (``/``, ``?``, ``#``, ``%``, ``@``, ``:``, spaces and
    non-ASCII all encoded).
    """
    return template.replace("%s", urllib.parse.quote(str(minion_id), safe=""))


def _read_secret_file(path, what):
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError as err:
        raise ConfigError(f"cannot read {what} file {path}: {err.strerror}") from None


class FetchResult(dict):
    """
    What a fetch returned: ``document`` (dict or None), ``source`` (``api``,
    ``cache``, ``missing``, ``empty``), ``error`` (str or None),
    ``cache_age`` (seconds or None) and ``schema`` (``valid``, ``invalid``,
    ``not configured``).
    """


class AssetApiClient:
    """
    Client for one ``ops_http_json`` configuration. Thread-safe.
    """

    def __init__(self, options, cachedir):
        self.conf = normalise_config(options)
        self.timeout = self.conf["timeout"]
        self.session = self._build_session()
        self.cache_dir = self.conf["cache_dir"] or os.path.join(
            cachedir,
            "opsalt",
            "ops_http_json",
            hashlib.sha256(self.conf["url"].encode()).hexdigest()[:16],
        )
        self._schema_validator = None
        self._schema_lock = threading.Lock()
        self._cache_digests = {}  # minion id -> sha256 of the cached document

    # -- set-up -------------------------------------------------------------

    def _build_session(self):
        conf = self.conf
        session = requests.Session()
        session.trust_env = False  # no proxies or netrc from the master's environment
        retry = Retry(
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

    def safe_url(self, minion_id):
        """
        The minion's URL with credentials redacted, for messages.
        """
        return redact_url(minion_url(self.conf["url"], minion_id))

    def _error(self, minion_id, message):
        text = f"ops_http_json: {minion_id}: {self.safe_url(minion_id)}: {message}"
        return AssetApiError(redact_text(text, self._secrets()))

    def fetch_document(self, minion_id):
        """
        GET the minion's document. Returns the dict, ``None`` for 404, or
        raises :class:`AssetApiError`. The whole call is bounded by
        ``deadline`` seconds even if the server drips bytes.
        """
        deadline = self.conf["deadline"]
        future = _executor().submit(self._fetch_once, minion_id, time.monotonic() + deadline)
        try:
            return future.result(timeout=deadline + 0.05)
        except concurrent.futures.TimeoutError:
            # The worker thread is abandoned (it ends with the server's drip);
            # the master's thread is free now.
            raise self._error(minion_id, f"no complete answer within the {deadline} s deadline") from None

    def _fetch_once(self, minion_id, deadline_at):
        url = minion_url(self.conf["url"], minion_id)
        kwargs = self._request_kwargs()
        origin = urllib.parse.urlsplit(url)[:2]
        try:
            for _hop in range(4):
                response = self.session.get(
                    url, timeout=self.timeout, stream=True, allow_redirects=False, **kwargs
                )
                if response.is_redirect:
                    target = urllib.parse.urljoin(url, response.headers.get("Location", ""))
                    response.close()
                    if urllib.parse.urlsplit(target)[:2] != origin:
                        raise self._error(
                            minion_id,
                            f"redirected to another origin ({redact_url(target)}); not followed, "
                            "so no credential leaves the configured host",
                        )
                    url = target
                    continue
                break
            else:
                raise self._error(minion_id, "too many redirects")
            with response:
                return self._read_response(minion_id, response, deadline_at)
        except AssetApiError:
            raise
        except requests.exceptions.SSLError as err:
            raise self._error(minion_id, f"TLS verification failed: {_short(err)}") from None
        except requests.exceptions.ConnectTimeout:
            raise self._error(minion_id, f"connect timed out after {self.timeout[0]} s") from None
        except requests.exceptions.ReadTimeout:
            raise self._error(minion_id, f"no answer within the {self.timeout[1]} s read timeout") from None
        except requests.exceptions.ConnectionError as err:
            raise self._error(minion_id, f"connection failed: {_short(err)}") from None
        except requests.exceptions.RequestException as err:
            raise self._error(minion_id, f"request failed: {type(err).__name__}") from None

    def _read_response(self, minion_id, response, deadline_at):
        status = response.status_code
        if status == 404:
            return None
        if status in (401, 403):
            raise self._error(
                minion_id,
                f"authentication failed (HTTP {status}); check username/password_file or token_file",
            )
        if status != 200:
            raise self._error(minion_id, f"HTTP {status} {response.reason or ''}".rstrip())
        limit = self.conf["max_bytes"]
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise self._error(minion_id, f"body of {declared} bytes exceeds max_bytes ({limit})")
        body = bytearray()
        for chunk in response.iter_content(CHUNK):
            body.extend(chunk)
            if len(body) > limit:
                raise self._error(minion_id, f"body exceeds max_bytes ({limit})")
            if time.monotonic() > deadline_at:
                raise self._error(minion_id, f"body still arriving at the {self.conf['deadline']} s deadline")
        try:
            text = bytes(body).decode("utf-8")
        except UnicodeDecodeError:
            raise self._error(minion_id, "body is not UTF-8") from None
        try:
            document = json.loads(text)
        except ValueError as err:
            raise self._error(minion_id, f"body is not valid JSON ({err.msg} at line {err.lineno})") from None
        if not isinstance(document, dict):
            raise self._error(minion_id, f"JSON is a {type(document).__name__}, expected an object")
        self.validate(minion_id, document)
        return document

    # -- schema -------------------------------------------------------------

    def _validator(self):
        with self._schema_lock:
            if self._schema_validator is None:
                import jsonschema

                path = self.conf["schema"]
                try:
                    with open(path, encoding="utf-8") as handle:
                        schema = json.load(handle)
                except (OSError, ValueError) as err:
                    raise ConfigError(f"cannot load schema {path}: {err}") from None
                cls = jsonschema.validators.validator_for(schema)
                self._schema_validator = cls(schema)
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

    def cache_store(self, minion_id, document):
        """
        Save the last good document (mode 0600, atomic). The file's mtime is
        the time of the last good fetch; an unchanged document only touches
        it, so the hot path costs no write.
        """
        path = self._cache_path(minion_id)
        payload = json.dumps(document, sort_keys=True)
        digest = hashlib.sha256(payload.encode()).digest()
        if self._cache_digests.get(minion_id) == digest:
            try:
                os.utime(path)
                return
            except FileNotFoundError:
                pass
        os.makedirs(self.cache_dir, mode=0o700, exist_ok=True)
        opsalt_files.atomic_write(path, payload, mode=0o600, make_backup=False, durable=False)
        self._cache_digests[minion_id] = digest

    def cache_load(self, minion_id):
        """
        ``(document, age_seconds)`` from the cache, or ``(None, None)``.
        """
        path = self._cache_path(minion_id)
        try:
            with open(path, encoding="utf-8") as handle:
                document = json.load(handle)
            age = max(0.0, time.time() - os.stat(path).st_mtime)
        except (OSError, ValueError):
            return None, None
        return (document, age) if isinstance(document, dict) else (None, None)

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
                _doc, age = self.cache_load(minion_id)
                if age is not None:
                    ages[minion_id] = age
        return ages

    # -- the policy ---------------------------------------------------------

    def fetch(self, minion_id):
        """
        Fetch with the full policy applied; never raises for API errors.
        Returns a :class:`FetchResult`.
        """
        result = FetchResult(document=None, source=None, error=None, cache_age=None)
        result["schema"] = "configured" if self.conf["schema"] else "not configured"
        try:
            document = self.fetch_document(minion_id)
        except ConfigError:
            raise
        except AssetApiError as err:
            result["error"] = str(err)
            return self._on_error(minion_id, result)
        if document is None:
            if self.conf["missing"] == "error":
                result["error"] = str(self._error(minion_id, "unknown host (HTTP 404) and missing: error"))
                return self._on_error(minion_id, result)
            result.update(document={}, source="missing")
            return result
        try:
            self.cache_store(minion_id, document)
        except OSError as err:
            log.warning("ops_http_json: %s: cannot write cache: %s", minion_id, err.strerror)
        result.update(document=document, source="api", cache_age=0.0)
        if self.conf["schema"]:
            result["schema"] = "valid"
        return result

    def _on_error(self, minion_id, result):
        policy = self.conf["on_error"]
        if policy == "empty":
            result.update(document={}, source="empty")
        elif policy == "stale":
            document, age = self.cache_load(minion_id)
            result["cache_age"] = age
            if document is not None and age <= self.conf["max_stale"]:
                result.update(document=document, source="cache")
        return result

    def pillar(self, minion_id):
        """
        The pillar for ``minion_id`` per ``on_error``; raises
        :class:`AssetApiError` when the policy says the call must fail.
        """
        result = self.fetch(minion_id)
        if result["document"] is None:
            message = result["error"]
            if self.conf["on_error"] == "stale":
                message += f"; no cached copy younger than max_stale ({self.conf['max_stale']} s)"
            raise AssetApiError(message)
        if result["source"] == "cache":
            log.warning(
                "%s; serving the cached document from %.0f s ago",
                result["error"],
                result["cache_age"],
            )
        elif result["source"] == "empty":
            log.warning("%s; on_error is 'empty', serving {}", result["error"])
        document = result["document"]
        if self.conf["namespace"]:
            document = {self.conf["namespace"]: document}
        return document


def _short(value, limit=300):
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "..."


_CLIENTS = {}
_CLIENTS_LOCK = threading.Lock()
_EXECUTORS = {}
# Fetches run on a pool so a call can be abandoned at its deadline even while
# the server drips headers; the pool bounds how many such calls can pile up.
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


def _executor():
    pid = os.getpid()  # threads do not survive the master's fork into workers
    with _CLIENTS_LOCK:
        pool = _EXECUTORS.get(pid)
        if pool is None:
            pool = _EXECUTORS[pid] = DaemonPool(FETCH_THREADS, "ops_http_json")
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
]
