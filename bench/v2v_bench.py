"""
v2v benchmark: one migration of a Xen guest with two 256 MiB disks onto a
real one-node Ceph (bluestore on a file), run two ways in the same run:

- ``script``: a plain shell script running the manual procedure's commands
  one after another (the baseline);
- ``runner``: ``salt-run v2v.migrate`` on a real salt-master driving a real
  salt-minion (both started here, on 127.0.0.1), with its per-disk phases in
  parallel, a journal after every step and events.

The Xen host, virsh and virt-v2v are the test stand-ins (they copy real bytes:
``dd`` over "ssh" and the "conversion" read and write every byte); rbd is the
real one. Each round re-creates the target instance's images.

Prints the wall times, the ratio script/runner, and the runner's own
overhead: the wall time during which no minion call was in flight (engine,
journal writes, events), from the runner's journal.

Usage: .venv/bin/python bench/v2v_bench.py [--rounds N] [--disk-mib 256]
"""

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import yaml  # noqa: E402

from tests.support.ceph import CephCluster  # noqa: E402
from tests.support.procs import free_port, stop_popen, wait_for  # noqa: E402
from tests.support.v2v_standins import XEN_HOST, Standins, write_pattern  # noqa: E402

BIN = os.path.dirname(sys.executable)
MiB = 1024 * 1024
POOL = "rbd"


class SaltPair:
    """
    A salt-master and a salt-minion in a temp dir, on 127.0.0.1.
    """

    def __init__(self, root, minion_opts):
        self.root = root
        self.master_dir = os.path.join(root, "master-conf")
        self.minion_dir = os.path.join(root, "minion-conf")
        self.minion_id = "bench-conversion"
        pub, ret = free_port(), free_port()
        common = {"user": "root", "log_level": "warning", "log_level_logfile": "info"}
        master = dict(common, root_dir=os.path.join(root, "master"), interface="127.0.0.1", publish_port=pub,
                      ret_port=ret, auto_accept=True, file_roots={"base": []}, pillar_roots={"base": []},
                      log_file=os.path.join(root, "master.log"))
        minion = dict(common, id=self.minion_id, root_dir=os.path.join(root, "minion"), master="127.0.0.1",
                      master_port=ret, publish_port=pub, log_file=os.path.join(root, "minion.log"),
                      **minion_opts)
        for directory, name, conf in ((self.master_dir, "master", master), (self.minion_dir, "minion", minion)):
            os.makedirs(directory)
            with open(os.path.join(directory, name), "w", encoding="utf-8") as handle:
                yaml.safe_dump(conf, handle)
        self.procs = []

    def start(self):
        self.procs.append(subprocess.Popen([os.path.join(BIN, "salt-master"), "-c", self.master_dir]))
        self.procs.append(subprocess.Popen([os.path.join(BIN, "salt-minion"), "-c", self.minion_dir]))

        def ping():
            proc = subprocess.run([os.path.join(BIN, "salt"), "-c", self.master_dir, self.minion_id, "test.ping",
                                   "--out", "json", "-t", "5"], capture_output=True, text=True, timeout=30,
                                  check=False)
            return proc.returncode == 0 and json.loads(proc.stdout or "{}").get(self.minion_id) is True

        wait_for(ping, 120, interval=1, what="the bench minion answering")
        return self

    def stop(self):
        for proc in reversed(self.procs):
            stop_popen(proc)

    def journal(self, mig_id):
        path = os.path.join(self.root, "master", "var", "cache", "salt", "master", "opsalt", "v2v", f"{mig_id}.json")
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)

    def run(self, *args):
        proc = subprocess.run([os.path.join(BIN, "salt-run"), "-c", self.master_dir, "--out", "json", *args],
                              capture_output=True, text=True, timeout=1800, check=False)
        documents = []
        decoder = json.JSONDecoder()
        text = proc.stdout.strip()
        while text:
            doc, end = decoder.raw_decode(text)
            documents.append(doc)
            text = text[end:].strip()
        return proc.returncode, documents[-1] if documents else None, proc.stderr


class World:
    def __init__(self, ceph, standins, work_root, disk_bytes):
        self.ceph, self.standins, self.work_root = ceph, standins, work_root
        self.source = "instance-00000017"
        self.target = "instance-000007a2"
        self.devices = standins.add_xen_guest(self.source, [disk_bytes, disk_bytes], state="shut off")
        self.disk_bytes = disk_bytes
        self.template = os.path.join(work_root, "target-template.raw")
        write_pattern(self.template, disk_bytes, 4242)

    def fresh_target(self):
        """
        A new pre-created target instance: domain running, two RBD images.
        """
        self.uuid = str(uuid.uuid4())
        self.images = [f"{self.uuid}_disk", f"{self.uuid}_disk.local"]
        self.standins.add_compute_domain(self.target, "running")
        for image in self.images:
            self.ceph.rbd("import", "--dest-pool", POOL, self.template, image, timeout=600)
        self.work_dir = os.path.join(self.work_root, f"work-{self.uuid[:8]}")
        return self

    def definition(self, minion_id):
        return {
            "source_host": XEN_HOST, "source_domain": self.source, "conversion_minion": minion_id,
            "compute_minion": minion_id, "instance_uuid": self.uuid, "target_domain": self.target,
            "pool": POOL, "work_dir": self.work_dir, "copy_method": "dd",
        }

    def script(self):
        """
        The manual procedure as a shell script, one command after another.
        """
        tools = self.standins.tool_paths
        rbd = f"{tools['rbd']} --conf {self.ceph.conf} --keyring {self.ceph.keyring} --id admin"
        src, out = f"{self.work_dir}/source", f"{self.work_dir}/converted"
        lines = ["set -euo pipefail", f"mkdir -p {src} {out} {self.work_dir}/tmp"]
        for index, dev in enumerate(self.devices):
            lines.append(f"{tools['ssh']} root@{XEN_HOST} 'dd if={dev} bs=4M' > {src}/{self.source}-disk{index}")
        xml = f"{src}/{self.source}.xml"
        lines.append(f"{tools['virsh']} -c xen+ssh://root@{XEN_HOST}/ dumpxml {self.source} > {xml}")
        for index, dev in enumerate(self.devices):
            lines.append(f"sed -i \"s|<disk type='block'|<disk type='file'|; "
                         f"s|<source dev='{dev}'/>|<source file='{src}/{self.source}-disk{index}'/>|\" {xml}")
        lines.append(f"PATH={os.path.dirname(tools['nbdkit'])}:$PATH VIRT_V2V_TMPDIR={self.work_dir}/tmp "
                     f"{tools['virt-v2v']} -i libvirtxml {xml} -o local -os {out} -of raw -on {self.source}")
        lines.append(f"{tools['virsh']} -c qemu:///system shutdown {self.target}")
        for image in self.images:
            lines.append(f"{rbd} rename {POOL}/{image} {POOL}/{image}.bak")
        for image, letter in zip(self.images, "ab"):
            lines.append(f"{rbd} import --image-format 2 --dest-pool {POOL} {out}/{self.source}-sd{letter} {image}")
        lines.append(f"{tools['virsh']} -c qemu:///system start {self.target}")
        return "\n".join(lines) + "\n"

    def check_migrated(self):
        names = set(self.ceph.rbd("ls", "-p", POOL).stdout.decode().split())
        assert {f"{i}.bak" for i in self.images} <= names, "originals not kept as .bak"
        assert set(self.images) <= names
        assert self.standins.state("compute", self.target) == "running"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--disk-mib", type=int, default=256)
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="opsalt-v2v-bench-")
    disk_bytes = args.disk_mib * MiB
    ceph = CephCluster(os.path.join(root, "ceph"), block_bytes=max(4 * 1024**3, 12 * disk_bytes * args.rounds))
    pair = None
    results = {"script": [], "runner": [], "overhead": [], "flow": []}
    try:
        t0 = time.monotonic()
        ceph.start()
        print(f"ceph up in {time.monotonic() - t0:.1f} s", flush=True)
        standins = Standins(os.path.join(root, "world"))
        world = World(ceph, standins, root, disk_bytes)
        pair = SaltPair(os.path.join(root, "salt"), {"v2v": {"tools": standins.tool_paths,
                                                             "ceph": ceph.client_config}}).start()
        print("salt-master and salt-minion up", flush=True)
        for round_no in range(1, args.rounds + 1):
            world.fresh_target()
            script = world.script()
            started = time.monotonic()
            subprocess.run(["bash", "-c", script], check=True, timeout=1800)
            results["script"].append(time.monotonic() - started)
            world.check_migrated()

            world.fresh_target()
            kwargs = [f"{k}={v}" for k, v in world.definition(pair.minion_id).items()]
            mig_id = f"bench-{round_no}-{world.uuid[:8]}"
            started = time.monotonic()
            rc, ret, err = pair.run("v2v.migrate", mig_id, "quiet=True", *kwargs)
            wall = time.monotonic() - started
            if rc != 0 or not ret or ret.get("state") != "success":
                raise SystemExit(f"runner failed (rc {rc}): {ret} {err[-2000:]}")
            world.check_migrated()
            results["runner"].append(wall)
            results["overhead"].append(ret["overhead_seconds"])
            results["flow"].append(ret["seconds"])
            timeline = pair.journal(mig_id)["flow"]["tasks"]
            t_first = min(t["started"] for t in timeline.values())
            for name, task in sorted(timeline.items(), key=lambda item: item[1]["started"]):
                print(f"    {name:58s} {task['started'] - t_first:6.2f} -> {task['ended'] - t_first:6.2f} s")
            print(f"round {round_no}: script {results['script'][-1]:.2f} s, salt-run v2v.migrate {wall:.2f} s "
                  f"(flow {ret['seconds']:.2f} s, runner overhead {ret['overhead_seconds']:.2f} s)", flush=True)
    finally:
        if pair is not None:
            pair.stop()
        ceph.stop()
        shutil.rmtree(root, ignore_errors=True)
    script, runner = statistics.median(results["script"]), statistics.median(results["runner"])
    overhead = max(results["overhead"])
    print()
    print(f"v2v benchmark: 2 disks x {args.disk_mib} MiB, {args.rounds} rounds (median)")
    print(f"  {'plain shell script (sequential)':40s} {script:8.2f} s  1.00x")
    print(f"  {'salt-run v2v.migrate':40s} {runner:8.2f} s  {script / runner:.2f}x")
    flow = statistics.median(results["flow"])
    print(f"  {'  of which the flow (journalled steps)':40s} {flow:8.2f} s  {script / flow:.2f}x")
    print(f"  {'  of which salt-run start + preflight':40s} {runner - flow:8.2f} s")
    print(f"  {'runner overhead (max, outside commands)':40s} {overhead:8.2f} s  target < 2 s: "
          f"{'met' if overhead < 2 else 'MISSED'}")
    print(f"  runner faster than the script: {'yes' if runner < script else 'NO'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
