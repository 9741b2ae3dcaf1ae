"""
Real Prometheus and exporters for the monitoring tests, as plain processes
(this machine has no systemd): 127.0.0.1 and free ports, configuration, data
and textfile directories in temporary directories, stopped by pid.

- :class:`Prometheus`: 1 s scrape and evaluation intervals, the lifecycle API
  on (so ``POST /-/reload`` works), ``rule_files`` pointing at one rules file,
  static targets and ``file_sd_configs`` jobs.
- :class:`Exporter`: node_exporter (textfile directory, the vmstat fields and
  zoneinfo as the monitoring SLS sets them) or redis_exporter in front of a
  redis-server, from the arguments the module renders;
  :func:`node_exporter_from_defaults` runs exactly the ``ARGS`` of the
  defaults file the state wrote.
"""

import json
import os
import re
import shutil
import subprocess
import tempfile
import urllib.parse
import urllib.request

import pytest

from tests.support.procs import free_port, port_open, stop_popen, wait_for

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
NODE_EXPORTER = shutil.which("prometheus-node-exporter") or "/usr/bin/prometheus-node-exporter"
REDIS_EXPORTER = shutil.which("prometheus-redis-exporter") or "/usr/bin/prometheus-redis-exporter"


def _get_json(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


def _get_text(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode("utf-8")


class Prometheus:
    """
    One prometheus we started. ``targets`` is ``{job: [host:port, ...]}``;
    ``file_sd`` is ``{job: [file, ...]}``, a scrape job reading its targets
    from those ``file_sd`` files (they may not exist yet); ``rules_file`` is
    the one ``rule_files`` entry (it may not exist yet).
    """

    def __init__(self, targets=None, rules_file=None, file_sd=None):
        self.root = tempfile.mkdtemp(prefix="opsalt-prometheus-")
        self.port = free_port()
        self.config_file = os.path.join(self.root, "prometheus.yml")
        self.rules_file = rules_file or os.path.join(self.root, "rules", "opsalt.rules.yml")
        self.log_file = os.path.join(self.root, "prometheus.log")
        self.targets = dict(targets or {})
        self.file_sd = dict(file_sd or {})
        self.proc = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    @property
    def reload_url(self):
        return f"{self.url}/-/reload"

    def write_config(self):
        scrape = [
            {"job_name": job, "static_configs": [{"targets": list(addresses)}]}
            for job, addresses in sorted(self.targets.items())
        ]
        scrape += [
            {"job_name": job, "file_sd_configs": [{"files": list(files)}]}
            for job, files in sorted(self.file_sd.items())
        ]
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "900ms"},
            "rule_files": [self.rules_file],
            "scrape_configs": scrape,
        }
        with open(self.config_file, "w", encoding="utf-8") as handle:
            json.dump(config, handle)  # JSON is YAML

    def start(self):
        self.write_config()
        log = open(self.log_file, "ab")
        self.proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={self.config_file}",
                f"--storage.tsdb.path={os.path.join(self.root, 'data')}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
                "--storage.tsdb.retention.time=1h",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_for(self._ready, timeout=60, interval=0.2, what=f"prometheus on {self.url}")
        return self

    def _ready(self):
        if self.proc.poll() is not None:
            raise RuntimeError(f"prometheus exited: {self.read_log()[-2000:]}")
        return _get_text(f"{self.url}/-/ready").strip() != ""

    def read_log(self):
        try:
            with open(self.log_file, encoding="utf-8", errors="replace") as handle:
                return handle.read()
        except FileNotFoundError:
            return ""

    def reload_count(self):
        """How many times this prometheus has (re)loaded its configuration."""
        return self.read_log().count("Completed loading of configuration file")

    def query(self, expr):
        """The result vector of an instant query."""
        data = _get_json(f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        return data["data"]["result"]

    def active_targets(self):
        """``/api/v1/targets``: the active targets (``scrapePool``, ``labels``, ``health``, ...)."""
        return _get_json(f"{self.url}/api/v1/targets?state=active")["data"]["activeTargets"]

    def alerts(self):
        """``/api/v1/alerts``: the pending and firing alerts."""
        return _get_json(f"{self.url}/api/v1/alerts")["data"]["alerts"]

    def rules(self):
        """The rules loaded now (``/api/v1/rules``), every group flattened."""
        groups = _get_json(f"{self.url}/api/v1/rules")["data"]["groups"]
        return [rule for group in groups for rule in group["rules"]]

    def alert_names(self):
        """Names of the alerting rules loaded now."""
        return sorted(rule["name"] for rule in self.rules() if rule["type"] == "alerting")

    def stop(self):
        if self.proc is not None:
            stop_popen(self.proc)
            self.proc = None

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class Exporter:
    """
    One exporter we started with ``argv`` (the listen address included) on
    ``port``.
    """

    def __init__(self, argv, port, env=None):
        self.argv = list(argv)
        self.port = port
        self.env = env
        self.proc = None

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def start(self):
        self.proc = subprocess.Popen(
            self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=self.env
        )
        wait_for(
            lambda: self.proc.poll() is None and port_open(self.port), timeout=30, what=f"{self.argv[0]}"
        )
        return self

    def metrics(self):
        return _get_text(f"http://{self.address}/metrics")

    def stop(self):
        if self.proc is not None:
            stop_popen(self.proc)
            self.proc = None


def node_exporter(args, textfile_dir):
    """
    A node_exporter with the module's ``args`` (listen address replaced by a
    free loopback port) and its textfile collector reading ``textfile_dir``.
    """
    port = free_port()
    argv = [NODE_EXPORTER]
    argv += [
        arg for arg in args if not arg.startswith(("--web.listen-address", "--collector.textfile.directory"))
    ]
    argv += [f"--web.listen-address=127.0.0.1:{port}", f"--collector.textfile.directory={textfile_dir}"]
    return Exporter(argv, port)


def node_exporter_from_defaults(defaults_file):
    """
    The node_exporter Debian's unit starts from ``defaults_file``
    (``EnvironmentFile=`` it, ``ExecStart=/usr/bin/prometheus-node-exporter
    $ARGS``): exactly the flags of its ``ARGS="..."`` line, split at
    whitespace as systemd splits an unquoted ``$ARGS``. Its
    ``--web.listen-address`` must be ``127.0.0.1:<port>``.
    """
    with open(defaults_file, encoding="utf-8") as handle:
        found = re.findall(r'^ARGS="([^"]*)"$', handle.read(), re.M)
    assert len(found) == 1, f"{defaults_file} has {len(found)} ARGS lines"
    args = found[0].split()
    listen = [arg.split("=", 1)[1] for arg in args if arg.startswith("--web.listen-address=")]
    assert len(listen) == 1 and listen[0].startswith("127.0.0.1:"), f"listen address of {args}"
    return Exporter([NODE_EXPORTER, *args], int(listen[0].rsplit(":", 1)[1]))


def redis_exporter(redis_address, password=None):
    """
    A redis_exporter in front of ``redis_address``; the password (if any)
    reaches it through the environment, as the module's env file does.
    """
    port = free_port()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    if password:
        env["REDIS_PASSWORD"] = password
    argv = [REDIS_EXPORTER, f"-redis.addr=redis://{redis_address}", f"-web.listen-address=127.0.0.1:{port}"]
    return Exporter(argv, port, env=env)


@pytest.fixture
def prometheus_server():
    """
    A started Prometheus with no scrape targets and a rules path that does
    not exist yet (``.rules_file``).
    """
    server = Prometheus()
    try:
        os.makedirs(os.path.dirname(server.rules_file))
        yield server.start()
    finally:
        server.cleanup()
