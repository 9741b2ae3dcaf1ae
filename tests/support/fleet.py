"""
A fleet on one machine: one real salt-master and N real salt-minions as
plain processes (no pytest-salt-factories: lighter, and the master keeps
Salt's default ``worker_threads``), each with its own config dir, on
127.0.0.1 and free ports, stopped by pid. The master's pillar comes from
its own demo asset API (which the tests can hang) through
``ops_http_json``; opsalt's modules reach the master through the installed
package's ``salt.loader`` entry point.
"""

import os
import subprocess
import sys
import time

import salt.client
import salt.config
import yaml

from tests.support.asset_api import AssetApi
from tests.support.procs import free_port, port_open, stop_popen, wait_for

BIN = os.path.dirname(sys.executable)


def _write_config(path, config):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(config, handle)


class Fleet:
    """
    ``Fleet(root, size).start()``; ``minion_ids``, ``api`` (the demo asset
    API), ``client()`` (a ``LocalClient`` for this master) and ``stop()``.
    """

    def __init__(self, root, size=20, ext_pillar_options=None, master_options=None):
        self.root = root
        self.size = size
        self.ext_pillar_options = ext_pillar_options or {}
        self.master_options = master_options or {}
        self.minion_ids = [f"fleet{i:02d}" for i in range(1, size + 1)]
        self.api = AssetApi(os.path.join(root, "api"))
        self.master_dir = os.path.join(root, "master")
        self.master_config = os.path.join(self.master_dir, "conf", "master")
        self.ret_port = free_port()
        self.publish_port = free_port()
        self.procs = []

    # -- configuration --------------------------------------------------------

    def _daemon_paths(self, base):
        return {
            "root_dir": base,
            "pki_dir": os.path.join(base, "pki"),
            "cachedir": os.path.join(base, "cache"),
            "sock_dir": os.path.join(base, "sock"),
            "pidfile": os.path.join(base, "run.pid"),
            "log_file": os.path.join(base, "log"),
            "log_level_logfile": "info",
            "user": "root",
        }

    def _master_config(self):
        config = self._daemon_paths(self.master_dir)
        empty = os.path.join(self.master_dir, "empty")
        os.makedirs(empty, exist_ok=True)
        config.update(
            interface="127.0.0.1",
            ret_port=self.ret_port,
            publish_port=self.publish_port,
            auto_accept=True,
            key_logfile=os.path.join(self.master_dir, "key.log"),
            file_roots={"base": [empty]},
            pillar_roots={"base": [empty]},
            ext_pillar=[{"ops_http_json": self.api.ext_pillar_config(**self.ext_pillar_options)}],
        )
        config.update(self.master_options)
        return config

    def _minion_config(self, minion_id):
        base = os.path.join(self.root, "minions", minion_id)
        config = self._daemon_paths(base)
        config.update(
            id=minion_id,
            master="127.0.0.1",
            master_port=self.ret_port,
            acceptance_wait_time=1,
            random_reauth_delay=0,
            grains_cache=True,
            enable_gpu_grains=False,
            startup_states="",
        )
        return os.path.join(base, "conf"), config

    # -- life cycle ------------------------------------------------------------

    def start(self):
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self):
        self.api.start()
        for minion_id in self.minion_ids:
            self.api.set_document(minion_id, self.document(minion_id, 1))
        _write_config(self.master_config, self._master_config())
        self._spawn("salt-master", os.path.dirname(self.master_config))
        # a LocalClient reads the master's root key when it is made
        wait_for(lambda: port_open(self.ret_port), 120, what="salt-master listening")
        wait_for(
            lambda: os.path.exists(os.path.join(self.master_dir, "cache", ".root_key")), 60, what="root key"
        )
        for minion_id in self.minion_ids:
            conf_dir, config = self._minion_config(minion_id)
            _write_config(os.path.join(conf_dir, "minion"), config)
            self._spawn("salt-minion", conf_dir)
        client = self.client()
        wait_for(
            lambda: self._all_answer(client), 240, interval=1, what=f"{self.size} minions answering test.ping"
        )

    def _spawn(self, daemon, conf_dir):
        log = open(os.path.join(os.path.dirname(conf_dir), f"{daemon}.out"), "wb")
        proc = subprocess.Popen(
            [os.path.join(BIN, daemon), "-c", conf_dir, "-l", "quiet"], stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        self.procs.append(proc)
        return proc

    def _all_answer(self, client):
        answered = client.cmd(self.minion_ids, "test.ping", tgt_type="list", timeout=10)
        return len(answered) == self.size

    def stop(self):
        """
        Stop every process this fleet started, by pid (minions first).
        """
        for proc in reversed(self.procs):
            stop_popen(proc, timeout=20)
        self.procs = []
        self.api.stop()

    # -- helpers for tests -------------------------------------------------------

    @staticmethod
    def document(minion_id, version):
        """
        The asset document of ``minion_id`` at ``version``.
        """
        return {"fleet": {"id": minion_id, "version": version, "role": "web", "rack": f"r{version}"}}

    def set_version(self, version):
        for minion_id in self.minion_ids:
            self.api.set_document(minion_id, self.document(minion_id, version))

    def client(self):
        """
        A ``LocalClient`` of this master (one per thread that uses it).
        """
        return salt.client.LocalClient(mopts=salt.config.master_config(self.master_config))

    def refresh_pillar(self, client, timeout=120):
        """
        ``saltutil.refresh_pillar wait=True`` on every minion; returns
        ``(returns, seconds)``.
        """
        started = time.monotonic()
        returns = client.cmd(
            self.minion_ids, "saltutil.refresh_pillar", kwarg={"wait": True}, tgt_type="list", timeout=timeout
        )
        return returns, time.monotonic() - started

    def pillar_versions(self, client):
        """
        ``{minion_id: fleet:version}`` from each minion's in-memory pillar.
        """
        returns = client.cmd(
            self.minion_ids,
            "pillar.get",
            ["fleet:version"],
            kwarg={"unmask": True},
            tgt_type="list",
            timeout=30,
        )
        return returns

    @property
    def breaker_dir(self):
        return os.path.join(self.master_dir, "cache", "opsalt", "ops_http_json", "endpoints")
