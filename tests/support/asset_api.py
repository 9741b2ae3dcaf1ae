"""
The demo asset API as a test fixture: the real server from
``demo/asset_api.py`` in a subprocess on 127.0.0.1, with a documents
directory the tests can edit and fault injection through ``/_control``.
"""

import json
import os
import subprocess
import sys
import threading
import urllib.parse

import requests
import yaml

from tests.support.procs import port_open, stop_popen, wait_for

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO_API = os.path.join(REPO_ROOT, "demo", "asset_api.py")
USERNAME = "salt"
PASSWORD = "s3cret-Asset-Pw!"
TOKEN = "tok-7f3c9a1e5b2d4c6e8a0f"


class AssetApi:
    """
    A running demo asset API. ``url`` is the ext_pillar ``url`` template.
    """

    def __init__(self, root, tls_cert=None, tls_key=None, latency_ms=0):
        self.root = root
        self.docs = os.path.join(root, "docs")
        os.makedirs(self.docs, exist_ok=True)
        self.password_file = os.path.join(root, "password")
        self.token_file = os.path.join(root, "token")
        for path, value in ((self.password_file, PASSWORD), (self.token_file, TOKEN)):
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(value + "\n")
            os.chmod(path, 0o600)
        self.tls = bool(tls_cert)
        self.tls_cert, self.tls_key = tls_cert, tls_key
        self.latency_ms = latency_ms
        self.proc = None
        self.port = None
        self._lock = threading.Lock()

    @property
    def base(self):
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def url(self):
        return f"{self.base}/api/salt/%s/pillars/"

    def start(self):
        port_file = os.path.join(self.root, "port")
        argv = [
            sys.executable,
            DEMO_API,
            "--port",
            "0",
            "--port-file",
            port_file,
            "--docs",
            self.docs,
            "--user",
            USERNAME,
            "--password-file",
            self.password_file,
            "--token-file",
            self.token_file,
            "--control",
            "--latency-ms",
            str(self.latency_ms),
        ]
        if self.tls:
            argv += ["--tls-cert", self.tls_cert, "--tls-key", self.tls_key]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.port = int(wait_for(lambda: open(port_file).read().strip(), 15, what="demo API port file"))
        wait_for(lambda: port_open(self.port), 15, what="demo API listening")
        return self

    def stop(self):
        if self.proc is not None:
            stop_popen(self.proc)

    # -- documents ----------------------------------------------------------

    def _doc_path(self, minion_id):
        return os.path.join(self.docs, urllib.parse.quote(minion_id, safe="") + ".yaml")

    def set_document(self, minion_id, document):
        """
        Replace the whole document of ``minion_id`` (``None`` removes it).
        """
        path = self._doc_path(minion_id)
        with self._lock:
            if document is None:
                if os.path.exists(path):
                    os.unlink(path)
                return
            tmp = path + ".tmp"
            with open(tmp, "w", encoding="utf-8") as handle:
                yaml.safe_dump(document, handle)
            os.replace(tmp, path)

    def get_document(self, minion_id):
        try:
            with open(self._doc_path(minion_id), encoding="utf-8") as handle:
                return yaml.safe_load(handle) or {}
        except FileNotFoundError:
            return None

    def set_section(self, minion_id, key, value):
        """
        Set one top-level pillar key of ``minion_id``'s document, keeping the
        others (components share one minion in the integration tests).
        """
        with self._lock:
            document = self.get_document(minion_id) or {}
        document[key] = value
        self.set_document(minion_id, document)

    # -- control ------------------------------------------------------------

    def control(self, **body):
        """
        POST to ``/_control`` (faults, latency_ms, reset_counters).
        """
        resp = requests.post(f"{self.base}/_control", data=json.dumps(body), verify=False, timeout=5)
        resp.raise_for_status()
        return resp.json()

    def stats(self):
        resp = requests.get(f"{self.base}/_control", verify=False, timeout=5)
        resp.raise_for_status()
        return resp.json()

    def ext_pillar_config(self, **extra):
        """
        An ``ops_http_json`` option mapping for this server.
        """
        config = {"url": self.url, "username": USERNAME, "password_file": self.password_file}
        config.update(extra)
        return config
