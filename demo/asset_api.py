"""
The demo asset API: a small real HTTP server that speaks the contract the
``ops_http_json`` ext_pillar expects from the asset-management system.

Contract::

    GET <base>/<percent-encoded minion id>/pillars/
      200  application/json, a JSON object: the minion's pillar
      404  unknown host
      401  no or wrong credentials (basic auth or bearer token)
      403  credentials valid, but not for this host

Documents come from a directory, one file per minion:
``<quote(minion_id, safe='')>.yaml`` (or ``.yml`` / ``.json``).

For tests and benchmarks it can add latency, serve TLS, and (with
``--control``) take fault injections at ``POST /_control`` with a JSON body
``{"faults": ["status:502", ...], "latency_ms": 1}``: each queued fault
serves one request, in order; ``{"sticky": "hang"}`` serves that fault to
every request until ``{"sticky": null}`` (a hung request then ends too).
Faults: ``status:<code>``, ``invalid-json``,
``array``, ``not-utf8``, ``big:<bytes>``, ``drip:<seconds per byte>`` (the
body), ``drip-headers:<seconds per byte>``, ``hang``, ``redirect:<url>``, ``retry-after:<seconds>`` (a 503 with that
header), ``too-many:<seconds>`` (a 429 with that ``Retry-After``).

Documents carry a strong ``ETag`` (a hash of the body) and
``Last-Modified`` (the file's mtime); a request whose ``If-None-Match``
matches, or whose ``If-Modified-Since`` is not older than the file, gets
``304 Not Modified`` without a body. ``GET /_control`` reports the requests
per minion, the count per status, the body bytes sent and the server's CPU
seconds.

Run it::

    opsalt-demo-api --port 8089 --docs demo/pillars --user salt --password-file pw
"""

import argparse
import base64
import collections
import email.utils
import hashlib
import hmac
import http.server
import json
import os
import ssl
import sys
import threading
import time
import urllib.parse

import yaml


class ApiState:
    """
    Server-wide settings and the fault queue (shared by handler threads).
    """

    def __init__(self, docs, base, users, tokens, latency_ms, control, host_acl):
        self.docs = docs
        self.base = "/" + base.strip("/") if base.strip("/") else ""
        self.users = users
        self.tokens = tokens
        self.latency_ms = latency_ms
        self.control = control
        self.host_acl = host_acl  # principal -> list of allowed minion ids (None: all)
        self.faults = collections.deque()
        self.sticky = None  # a fault served to every request until cleared
        self.unstuck = threading.Event()
        self.lock = threading.Lock()
        self.requests = collections.Counter()
        self.statuses = collections.Counter()
        self.body_bytes = 0
        self.auth_seen = []  # Authorization headers seen, for tests of credential leaks

    def next_fault(self):
        with self.lock:
            if self.faults:
                return self.faults.popleft()
            return self.sticky

    def set_sticky(self, fault):
        self.sticky = fault
        if fault:
            self.unstuck.clear()
        else:
            self.unstuck.set()  # hung requests end now

    def count(self, status, body_bytes):
        with self.lock:
            self.statuses[str(status)] += 1
            self.body_bytes += body_bytes


def document_path(docs, minion_id):
    """
    The file of the minion's document in ``docs``, or ``None``.
    """
    name = urllib.parse.quote(minion_id, safe="")
    if name.startswith("."):
        return None
    for ext in (".yaml", ".yml", ".json"):
        path = os.path.join(docs, name + ext)
        if os.path.isfile(path):
            return path
    return None


def load_document(docs, minion_id):
    """
    The minion's document from ``docs``, or ``None`` when there is none.
    """
    path = document_path(docs, minion_id)
    if path is None:
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle) if path.endswith(".json") else yaml.safe_load(handle)


class AssetApiHandler(http.server.BaseHTTPRequestHandler):
    """
    Request handler; ``server.state`` is the :class:`ApiState`.
    """

    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; without TCP_NODELAY a keep-alive
    # client waits ~40 ms per response on delayed ACKs.
    disable_nagle_algorithm = True
    server_version = "opsalt-demo-asset-api/1"

    def log_message(self, format, *args):
        if not self.server.quiet:
            sys.stderr.write("%s %s\n" % (self.log_date_time_string(), format % args))

    # -- helpers ------------------------------------------------------------

    def _send(self, status, body=b"", content_type="application/json", headers=None):
        if self.path != "/_control":
            self.server.state.count(status, len(body))
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _drip(self, data, delay):
        try:
            for i in range(len(data)):
                self.wfile.write(data[i : i + 1])
                self.wfile.flush()
                time.sleep(delay)
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True

    def _json(self, status, data):
        self._send(status, json.dumps(data).encode())

    def _principal(self):
        """
        The authenticated principal, ``None`` (auth required but missing or
        wrong) or ``""`` when the server has no auth configured.
        """
        state = self.server.state
        header = self.headers.get("Authorization", "")
        if header:
            state.auth_seen.append(header)
        if not state.users and not state.tokens:
            return ""
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "basic" and state.users:
            try:
                user, _, password = base64.b64decode(value).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return None
            expected = state.users.get(user)
            if expected is not None and hmac.compare_digest(expected, password):
                return user
        if scheme.lower() == "bearer" and state.tokens:
            for name, token in state.tokens.items():
                if hmac.compare_digest(token, value.strip()):
                    return name
        return None

    # -- verbs --------------------------------------------------------------

    def do_POST(self):
        state = self.server.state
        if not state.control or self.path != "/_control":
            self._json(404, {"error": "not found"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        with state.lock:
            if "faults" in body:
                state.faults.clear()
                state.faults.extend(body["faults"])
            if "latency_ms" in body:
                state.latency_ms = float(body["latency_ms"])
            if "sticky" in body:
                state.set_sticky(body["sticky"])
            if body.get("reset_counters"):
                state.requests.clear()
                state.statuses.clear()
                state.body_bytes = 0
                state.auth_seen.clear()
        self._json(
            200, {"faults": list(state.faults), "latency_ms": state.latency_ms, "sticky": state.sticky}
        )

    def do_GET(self):
        state = self.server.state
        if state.control and self.path == "/_control":
            with state.lock:
                stats = {
                    "requests": dict(state.requests),
                    "statuses": dict(state.statuses),
                    "body_bytes": state.body_bytes,
                    "cpu_seconds": time.process_time(),
                    "auth_seen": list(state.auth_seen),
                }
            self._json(200, stats)
            return
        raw_path = urllib.parse.urlsplit(self.path).path
        prefix = state.base + "/"
        suffix = "/pillars/"
        if not (raw_path.startswith(prefix) and raw_path.endswith(suffix)):
            self._json(404, {"error": "not found"})
            return
        encoded_id = raw_path[len(prefix) : -len(suffix)]
        if not encoded_id or "/" in encoded_id:
            self._json(404, {"error": "not found"})
            return
        minion_id = urllib.parse.unquote(encoded_id, errors="strict")
        with state.lock:
            state.requests[minion_id] += 1
        if state.latency_ms:
            time.sleep(state.latency_ms / 1000.0)
        fault = state.next_fault()
        if fault and self._inject(fault):
            return
        principal = self._principal()
        if principal is None:
            self._send(
                401,
                b'{"error": "authentication required"}',
                headers={"WWW-Authenticate": 'Basic realm="assets"'},
            )
            return
        allowed = state.host_acl.get(principal) if principal else None
        if allowed is not None and minion_id not in allowed:
            self._json(403, {"error": "not permitted for this host"})
            return
        self._serve_document(minion_id)

    def _serve_document(self, minion_id):
        path = document_path(self.server.state.docs, minion_id)
        document = load_document(self.server.state.docs, minion_id) if path else None
        if document is None:
            self._json(404, {"error": "unknown host"})
            return
        body = json.dumps(document, sort_keys=True).encode()
        mtime = int(os.stat(path).st_mtime)
        headers = {
            "ETag": '"%s"' % hashlib.sha256(body).hexdigest()[:32],
            "Last-Modified": email.utils.formatdate(mtime, usegmt=True),
        }
        if self._not_modified(headers["ETag"], mtime):
            self._send(304, b"", headers=headers)
            return
        self._send(200, body, headers=headers)

    def _not_modified(self, etag, mtime):
        """
        RFC 9110 13.2.2: If-None-Match decides when present, else
        If-Modified-Since.
        """
        if_none_match = self.headers.get("If-None-Match")
        if if_none_match is not None:
            return etag in [tag.strip() for tag in if_none_match.split(",")] or if_none_match.strip() == "*"
        since = self.headers.get("If-Modified-Since")
        if since:
            try:
                return mtime <= email.utils.parsedate_to_datetime(since).timestamp()
            except (TypeError, ValueError):
                return False
        return False

    def _inject(self, fault):
        """
        Serve ``fault``; return True when the response was handled.
        """
        kind, _, arg = fault.partition(":")
        if kind == "status":
            self._json(int(arg), {"error": f"injected {arg}"})
        elif kind == "retry-after":
            self._send(503, b"{}", headers={"Retry-After": arg})
        elif kind == "too-many":
            self._send(429, b"{}", headers={"Retry-After": arg})
        elif kind == "invalid-json":
            self._send(200, b'{"broken": ')
        elif kind == "array":
            self._send(200, b'["not", "an", "object"]')
        elif kind == "not-utf8":
            self._send(200, b'{"name": "\xff\xfe"}')
        elif kind == "big":
            size = int(arg)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")  # no Content-Length to trust
            self.end_headers()
            block = b" " * 65536
            sent = 0
            try:
                self.wfile.write(b"%x\r\n{\r\n" % 1)
                while sent < size:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
                    sent += len(block)
                self.wfile.write(b"1\r\n}\r\n0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass
            self.close_connection = True
        elif kind == "drip":
            body = b'{"dripping": "' + b"x" * 1000 + b'"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self._drip(body, float(arg or 1))
        elif kind == "drip-headers":
            # the status line and headers a byte at a time: every byte resets
            # a client's read timeout, so only a deadline ends the wait
            self._drip(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
                float(arg or 1),
            )
        elif kind == "hang":
            # until the time is up, or until a sticky hang is cleared
            if self.server.state.sticky == fault:
                self.server.state.unstuck.wait(float(arg or 3600))
            else:
                time.sleep(float(arg or 3600))
            self.close_connection = True
        elif kind == "redirect":
            self._send(302, b"", headers={"Location": arg})
        else:
            return False
        return True


class AssetApiServer(http.server.ThreadingHTTPServer):
    """
    Threaded server holding an :class:`ApiState`.
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, state, quiet=True):
        self.state = state
        self.quiet = quiet
        super().__init__(address, AssetApiHandler)


def _read_secret(path):
    with open(path, encoding="utf-8") as handle:
        return handle.read().strip()


def build_server(args):
    """
    Build (but do not start) the server described by parsed ``args``.
    """
    users = {}
    if args.user:
        users[args.user] = _read_secret(args.password_file) if args.password_file else (args.password or "")
    tokens = {}
    if args.token_file:
        tokens["token"] = _read_secret(args.token_file)
    host_acl = {}
    if args.acl:
        with open(args.acl, encoding="utf-8") as handle:
            host_acl = yaml.safe_load(handle) or {}
    state = ApiState(args.docs, args.base, users, tokens, args.latency_ms, args.control, host_acl)
    server = AssetApiServer((args.host, args.port), state, quiet=not args.verbose)
    if args.tls_cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    return server


def parse_args(argv=None):
    """
    Command-line options.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8089)
    parser.add_argument("--base", default="/api/salt", help="path prefix before /<minion id>/pillars/")
    parser.add_argument("--docs", required=True, help="directory of <minion id>.yaml|.json documents")
    parser.add_argument("--user", help="basic-auth user name")
    parser.add_argument("--password", help="basic-auth password (prefer --password-file)")
    parser.add_argument("--password-file")
    parser.add_argument("--token-file", help="file holding an accepted bearer token")
    parser.add_argument("--acl", help="YAML mapping principal -> list of minion ids it may read (else 403)")
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--control", action="store_true", help="enable POST /_control fault injection")
    parser.add_argument("--port-file", help="write the bound port here once listening (use with --port 0)")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    return parser.parse_args(argv)


def main(argv=None):
    """
    Entry point of ``opsalt-demo-api``.
    """
    args = parse_args(argv)
    server = build_server(args)
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(str(server.server_address[1]))
        os.replace(tmp, args.port_file)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
