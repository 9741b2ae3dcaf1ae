"""
A throwaway one-node Ceph cluster for tests and benchmarks: one mon and one
OSD (bluestore on a sparse file) on 127.0.0.1, pool ``rbd`` of size 1, cephx
keys in the cluster's own temporary directory, nothing in /etc/ceph and no
mgr (rbd does not need one). Every ``ceph``/``rbd`` call runs under a timeout:
without a mgr some ``ceph`` commands hang instead of failing.

Usage::

    with CephCluster(tmpdir) as cluster:
        cluster.rbd("ls", "-p", "rbd")

Daemons are stopped by the pids they wrote, after checking each pid still
runs with this cluster's ceph.conf on its command line.
"""

import os
import signal
import subprocess
import time
import uuid

import opsalt_wait

from tests.support.procs import free_port, wait_for

CEPH_TOOLS = ("ceph", "ceph-mon", "ceph-osd", "ceph-authtool", "monmaptool", "rbd")
CALL_TIMEOUT = 30

CONF_TEMPLATE = """\
[global]
fsid = {fsid}
mon_host = [v2:127.0.0.1:{port_v2},v1:127.0.0.1:{port_v1}]
public_addr = 127.0.0.1
cluster_addr = 127.0.0.1
ms_bind_ipv4 = true
ms_bind_ipv6 = false
auth_cluster_required = cephx
auth_service_required = cephx
auth_client_required = cephx
auth_allow_insecure_global_id_reclaim = false
run_dir = {dir}/run
crash_dir = {dir}/crash
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
osd_crush_chooseleaf_type = 0
mon_allow_pool_size_one = true
mon_allow_pool_delete = true
mon_warn_on_pool_no_redundancy = false
mon_data_avail_warn = 2
mon_data_avail_crit = 1
mon_cluster_log_file = {dir}/log/cluster.log
# no mgr on purpose: keep the mon from raising MGR_DOWN
mon_mgr_mkfs_grace = 31536000
[mon]
mon_data = {dir}/mon/ceph-$id
log_file = {dir}/log/$name.log
pid_file = {dir}/run/$name.pid
[osd]
osd_data = {dir}/osd/ceph-$id
log_file = {dir}/log/$name.log
pid_file = {dir}/run/$name.pid
osd_objectstore = bluestore
bluestore_block_path = {dir}/osd/ceph-$id/block.img
bluestore_block_size = {block_bytes}
bluestore_block_create = true
bluestore_fsck_on_mount = false
osd_memory_target = 939524096
osd_max_object_name_len = 256
osd_max_object_namespace_len = 64
[client]
keyring = {dir}/ceph.client.admin.keyring
log_file = /dev/null
admin_socket =
"""


class CephError(RuntimeError):
    """
    The cluster could not be started or a command failed.
    """


def ceph_installed():
    """
    True when every Ceph binary the fixture needs is on PATH.
    """
    import shutil

    return all(shutil.which(tool) for tool in CEPH_TOOLS)


class CephCluster:
    """
    One mon (``mon.a``) and one OSD (``osd.0``) in ``root``.
    """

    def __init__(self, root, block_bytes=2 * 1024**3, pool="rbd"):
        self.root = os.path.abspath(root)
        self.conf = os.path.join(self.root, "ceph.conf")
        self.keyring = os.path.join(self.root, "ceph.client.admin.keyring")
        self.client_id = "admin"
        self.pool = pool
        self.block_bytes = int(block_bytes)
        self.pids = {}

    # -- commands -------------------------------------------------------------

    def _run(self, argv, timeout=CALL_TIMEOUT, check=True, **kwargs):
        try:
            proc = subprocess.run(argv, capture_output=True, timeout=timeout, check=False, **kwargs)
        except subprocess.TimeoutExpired as err:
            raise CephError(f"{' '.join(argv)} did not finish within {timeout} s") from err
        if check and proc.returncode != 0:
            raise CephError(
                f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.decode(errors='replace')[-1500:]}"
            )
        return proc

    def ceph(self, *args, timeout=CALL_TIMEOUT, check=True):
        """
        ``ceph -c <conf> args...``; returns the text output.
        """
        proc = self._run(["ceph", "-c", self.conf, *args], timeout=timeout, check=check)
        return proc.stdout.decode()

    def rbd(self, *args, timeout=CALL_TIMEOUT, check=True, **kwargs):
        """
        ``rbd -c <conf> args...``; returns the ``CompletedProcess`` (bytes).
        """
        return self._run(["rbd", "-c", self.conf, *args], timeout=timeout, check=check, **kwargs)

    @property
    def client_config(self):
        """
        The ``v2v:ceph`` settings that point opsalt at this cluster.
        """
        return {"conf": self.conf, "keyring": self.keyring, "id": self.client_id}

    # -- life cycle -------------------------------------------------------------

    def _write_conf(self):
        for sub in ("run", "log", "crash", "mon/ceph-a", "osd/ceph-0"):
            os.makedirs(os.path.join(self.root, sub), exist_ok=True)
        text = CONF_TEMPLATE.format(
            fsid=self.fsid,
            port_v2=self.port_v2,
            port_v1=self.port_v1,
            dir=self.root,
            block_bytes=self.block_bytes,
        )
        with open(self.conf, "w", encoding="utf-8") as handle:
            handle.write(text)

    def _record_pid(self, name):
        pid_file = os.path.join(self.root, "run", f"{name}.pid")
        pid = wait_for(lambda: open(pid_file).read().strip(), 15, what=f"{name} pid file")
        self.pids[name] = int(pid)

    def _check_alive(self):
        for name, pid in self.pids.items():
            if not self._ours(pid):
                log = os.path.join(self.root, "log", f"{name}.log")
                tail = ""
                if os.path.exists(log):
                    with open(log, encoding="utf-8", errors="replace") as handle:
                        tail = handle.read()[-1500:]
                raise CephError(f"{name} (pid {pid}) died; log tail:\n{tail}")

    def _wait(self, predicate, what, timeout=120):
        def probe():
            self._check_alive()
            try:
                return predicate()
            except CephError:
                return False

        return wait_for(probe, timeout, interval=0.25, what=what)

    def start(self):
        """
        Bring the cluster up (about 10 s); returns ``self``.
        """
        os.makedirs(self.root, exist_ok=True)
        self.fsid = str(uuid.uuid4())
        self.port_v2, self.port_v1 = free_port(), free_port()
        while self.port_v1 == self.port_v2:
            self.port_v1 = free_port()
        self._write_conf()
        try:
            self._start_mon()
            self._start_osd()
            self._create_pool()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_mon(self):
        mon_keyring = os.path.join(self.root, "mon.keyring")
        self._run(
            [
                "ceph-authtool",
                "--create-keyring",
                mon_keyring,
                "--gen-key",
                "-n",
                "mon.",
                "--cap",
                "mon",
                "allow *",
            ]
        )
        self._run(
            [
                "ceph-authtool",
                "--create-keyring",
                self.keyring,
                "--gen-key",
                "-n",
                "client.admin",
                "--cap",
                "mon",
                "allow *",
                "--cap",
                "osd",
                "allow *",
                "--cap",
                "mgr",
                "allow *",
            ]
        )
        os.chmod(self.keyring, 0o600)
        self._run(["ceph-authtool", mon_keyring, "--import-keyring", self.keyring])
        monmap = os.path.join(self.root, "monmap")
        addr = f"[v2:127.0.0.1:{self.port_v2},v1:127.0.0.1:{self.port_v1}]"
        self._run(["monmaptool", "--create", "--fsid", self.fsid, "--addv", "a", addr, monmap])
        self._run(
            ["ceph-mon", "-c", self.conf, "--mkfs", "-i", "a", "--monmap", monmap, "--keyring", mon_keyring],
            timeout=60,
        )
        self._run(["ceph-mon", "-c", self.conf, "-i", "a"], timeout=60)  # daemonizes
        self._record_pid("mon.a")
        self._wait(lambda: self.ceph("quorum_status", timeout=10), "mon quorum")

    def _start_osd(self):
        osd_uuid = str(uuid.uuid4())
        key = self._run(["ceph-authtool", "--gen-print-key"]).stdout.decode().strip()
        secret_file = os.path.join(self.root, "osd-new.json")
        with open(secret_file, "w", encoding="utf-8") as handle:
            handle.write('{"cephx_secret": "%s"}' % key)
        try:
            osd_id = self.ceph("osd", "new", osd_uuid, "-i", secret_file).strip()
        finally:
            os.unlink(secret_file)
        if osd_id != "0":
            raise CephError(f"expected osd id 0, got {osd_id!r}")
        osd_dir = os.path.join(self.root, "osd", "ceph-0")
        self._run(
            [
                "ceph-authtool",
                "--create-keyring",
                os.path.join(osd_dir, "keyring"),
                "-n",
                "osd.0",
                "--add-key",
                key,
            ]
        )
        self._run(["ceph-osd", "-c", self.conf, "-i", "0", "--mkfs", "--osd-uuid", osd_uuid], timeout=120)
        self._run(["ceph-osd", "-c", self.conf, "-i", "0"], timeout=60)
        self._record_pid("osd.0")

        def osd_up():
            return any(
                line.startswith("osd.0 up ") and " in " in line
                for line in self.ceph("osd", "dump", timeout=10).splitlines()
            )

        self._wait(osd_up, "osd.0 up and in")

    def _create_pool(self):
        self.ceph("osd", "pool", "create", self.pool, "8", "8", "replicated")
        if "size: 1" not in self.ceph("osd", "pool", "get", self.pool, "size"):
            raise CephError(f"pool {self.pool} does not have size 1")
        self._wait(lambda: self.rbd("pool", "init", self.pool, timeout=20), "rbd pool init")

        def probe():
            self.rbd("create", "--size", "1", f"{self.pool}/__probe", timeout=20)
            self.rbd("rm", f"{self.pool}/__probe", timeout=20)
            return True

        self._wait(probe, "rbd create/rm probe")

    def _pid_from_file(self, name):
        # a daemon started but not yet recorded (start interrupted)
        try:
            with open(os.path.join(self.root, "run", f"{name}.pid"), encoding="utf-8") as handle:
                return int(handle.read().strip())
        except (OSError, ValueError):
            return None

    def _ours(self, pid):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                return self.conf.encode() in handle.read()
        except OSError:
            return False

    def stop(self):
        """
        Stop the OSD, then the mon (an OSD outliving its mon waits 5 s), by pid.
        """
        for name in ("osd.0", "mon.a"):
            pid = self.pids.pop(name, None) or self._pid_from_file(name)
            if pid is None or not self._ours(pid):
                continue
            os.kill(pid, signal.SIGTERM)
            if not opsalt_wait.until(lambda pid=pid: not self._ours(pid), 30, interval=0.05):
                os.kill(pid, signal.SIGKILL)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
