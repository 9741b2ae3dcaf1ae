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

Two scenarios, each with both ways:

- ``one box``: the "Xen host" is this machine, so the copies compete with
  the conversion, Ceph and Salt for the same CPUs and disk;
- ``remote Xen``: each copy stream is paced at a rate from ``--link-mib-s``
  (default 64 and 128 MiB/s), standing for what one ssh stream from an old
  Xen host moves (its own CPU runs the cipher and reads its disks). Streams
  are paced one by one: a shared link slower than the streams together is
  not modelled.

Prints the wall times, the ratio script/runner, and the runner's own
overhead: the wall time during which no minion call was in flight (engine,
journal writes, events), from the runner's journal. Also the headroom: the
script's own copy and import commands run one after another and side by
side, with no Salt, which bounds what any runner's parallel phases can save
on this machine. Every timed run starts after ``sync`` and a pause, and an
uncounted warm-up runs first.

Usage: .venv/bin/python bench/v2v_bench.py [--rounds N] [--disk-mib 256] [--link-mib-s 64,128] [--trace]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import yaml

from tests.support.ceph import CephCluster
from tests.support.procs import free_port, stop_popen, wait_for
from tests.support.v2v_standins import XEN_HOST, Standins, write_pattern

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
        master = dict(
            common,
            root_dir=os.path.join(root, "master"),
            interface="127.0.0.1",
            publish_port=pub,
            ret_port=ret,
            auto_accept=True,
            file_roots={"base": []},
            pillar_roots={"base": []},
            log_file=os.path.join(root, "master.log"),
        )
        minion = dict(
            common,
            id=self.minion_id,
            root_dir=os.path.join(root, "minion"),
            master="127.0.0.1",
            master_port=ret,
            publish_port=pub,
            log_file=os.path.join(root, "minion.log"),
            **minion_opts,
        )
        for directory, name, conf in (
            (self.master_dir, "master", master),
            (self.minion_dir, "minion", minion),
        ):
            os.makedirs(directory)
            with open(os.path.join(directory, name), "w", encoding="utf-8") as handle:
                yaml.safe_dump(conf, handle)
        self.procs = []

    def start(self):
        # the daemons' console chatter goes to a file beside their logs
        self.console = open(os.path.join(self.root, "console.log"), "ab")
        for daemon, conf in (("salt-master", self.master_dir), ("salt-minion", self.minion_dir)):
            self.procs.append(
                subprocess.Popen(
                    [os.path.join(BIN, daemon), "-c", conf], stdout=self.console, stderr=subprocess.STDOUT
                )
            )

        def ping():
            proc = subprocess.run(
                [
                    os.path.join(BIN, "salt"),
                    "-c",
                    self.master_dir,
                    self.minion_id,
                    "test.ping",
                    "--out",
                    "json",
                    "-t",
                    "5",
                ],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            return proc.returncode == 0 and json.loads(proc.stdout or "{}").get(self.minion_id) is True

        wait_for(ping, 120, interval=1, what="the bench minion answering")
        return self

    def stop(self):
        for proc in reversed(self.procs):
            stop_popen(proc)
        self.console.close()

    def journal(self, mig_id):
        path = os.path.join(
            self.root, "master", "var", "cache", "salt", "master", "opsalt", "v2v", f"{mig_id}.json"
        )
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)

    def run(self, *args):
        proc = subprocess.run(
            [os.path.join(BIN, "salt-run"), "-c", self.master_dir, "--out", "json", *args],
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
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
            "source_host": XEN_HOST,
            "source_domain": self.source,
            "conversion_minion": minion_id,
            "compute_minion": minion_id,
            "instance_uuid": self.uuid,
            "target_domain": self.target,
            "pool": POOL,
            "work_dir": self.work_dir,
            "copy_method": "dd",
        }

    def script(self):
        """
        The manual procedure as a shell script, one command after another.
        """
        tools = self.standins.tool_paths
        rbd = self.rbd_command()
        src, out = f"{self.work_dir}/source", f"{self.work_dir}/converted"
        lines = ["set -euo pipefail", f"mkdir -p {src} {out} {self.work_dir}/tmp"]
        for index, dev in enumerate(self.devices):
            lines.append(self.copy_command(dev, f"{src}/{self.source}-disk{index}"))
        xml = f"{src}/{self.source}.xml"
        lines.append(f"{tools['virsh']} -c xen+ssh://root@{XEN_HOST}/ dumpxml {self.source} > {xml}")
        for index, dev in enumerate(self.devices):
            lines.append(
                f"sed -i \"s|<disk type='block'|<disk type='file'|; "
                f"s|<source dev='{dev}'/>|<source file='{src}/{self.source}-disk{index}'/>|\" {xml}"
            )
        lines.append(
            f"PATH={os.path.dirname(tools['nbdkit'])}:$PATH VIRT_V2V_TMPDIR={self.work_dir}/tmp "
            f"{tools['virt-v2v']} -i libvirtxml {xml} -o local -os {out} -of raw -on {self.source}"
        )
        lines.append(f"{tools['virsh']} -c qemu:///system shutdown {self.target}")
        for image in self.images:
            lines.append(f"{rbd} rename {POOL}/{image} {POOL}/{image}.bak")
        for image, letter in zip(self.images, "ab"):
            lines.append(self.import_command(f"{out}/{self.source}-sd{letter}", image))
        lines.append(f"{tools['virsh']} -c qemu:///system start {self.target}")
        return "\n".join(lines) + "\n"

    def rbd_command(self):
        tools = self.standins.tool_paths
        return f"{tools['rbd']} --conf {self.ceph.conf} --keyring {self.ceph.keyring} --id admin"

    def copy_command(self, device, path):
        return f"{self.standins.tool_paths['ssh']} root@{XEN_HOST} 'dd if={device} bs=4M' > {path}"

    def import_command(self, path, image):
        return f"{self.rbd_command()} import --image-format 2 --dest-pool {POOL} {path} {image}"

    def per_disk_commands(self, tag):
        """
        The script's two per-disk phases for a scratch copy: the copies over
        "ssh" and the rbd imports, as shell command lists (copies, imports,
        scratch image names).
        """
        scratch = os.path.join(self.work_root, f"headroom-{tag}")
        os.makedirs(scratch, exist_ok=True)
        files = [os.path.join(scratch, f"disk{index}") for index in range(len(self.devices))]
        names = [f"headroom-{tag}-disk{index}" for index in range(len(self.devices))]
        copies = [self.copy_command(dev, path) + " 2>/dev/null" for dev, path in zip(self.devices, files)]
        imports = [self.import_command(path, name) + " --no-progress" for path, name in zip(files, names)]
        return scratch, copies, imports, names

    def headroom(self, tag):
        """
        What running the per-disk phases side by side can gain on this box,
        with no Salt involved: the script's own copy and import commands, run
        one after another and side by side, each way twice. Returns {phase:
        (best sequential s, best side by side s)}. A ratio near 1 means the
        box has no spare capacity for the runner's parallel phases to use.
        """

        def timed(commands, parallel):
            if parallel:
                # each job's exit is checked: a bare "wait" does not report failures
                body = "".join(f"( {c} ) & p{i}=$!; " for i, c in enumerate(commands))
                body += " && ".join(f"wait $p{i}" for i in range(len(commands)))
            else:
                body = " && ".join(commands)
            settle()
            started = time.monotonic()
            subprocess.run(["bash", "-c", "set -o pipefail; " + body], check=True, timeout=1800)
            return time.monotonic() - started

        best = {}
        # each way twice, alternating; the best of two (a run now and then
        # pays for the box's own hiccups, several times over for a copy)
        for attempt, parallel in enumerate((False, True, False, True)):
            scratch, copies, imports, names = self.per_disk_commands(f"{tag}-{attempt}")
            for phase, commands in (("copies", copies), ("imports", imports)):
                took = timed(commands, parallel)
                key = (phase, parallel)
                best[key] = min(best.get(key, took), took)
            for name in names:
                self.ceph.rbd("rm", "--no-progress", f"{POOL}/{name}", timeout=600)
            shutil.rmtree(scratch)
        return {phase: (best[(phase, False)], best[(phase, True)]) for phase in ("copies", "imports")}

    def check_migrated(self):
        names = set(self.ceph.rbd("ls", "-p", POOL).stdout.decode().split())
        assert {f"{i}.bak" for i in self.images} <= names, "originals not kept as .bak"
        assert set(self.images) <= names
        assert self.standins.state("compute", self.target) == "running"


def busy_cpu_seconds():
    """
    CPU time used machine-wide so far (all processes: the tools, Ceph, Salt),
    from /proc/stat.
    """
    with open("/proc/stat", encoding="ascii") as handle:
        fields = [int(v) for v in handle.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def settle():
    """
    Start every timed run from the same place: the previous step's dirty
    pages written out (right after a 512 MiB rbd import, writeback slows the
    next copies several times over).
    """
    os.sync()
    time.sleep(0.5)


def run_round(world, pair, label, round_no, trace=False):
    """
    One migration each way; returns (script s, runner s, flow s, runner
    overhead s, headroom, (script CPU s, runner CPU s)).
    """
    headroom = world.headroom(f"{label}-{round_no}")
    world.fresh_target()
    settle()
    prefix = "PS4='+ $EPOCHREALTIME '; set -x\n" if trace else ""
    started, cpu_before = time.monotonic(), busy_cpu_seconds()
    quiet = None if trace else subprocess.DEVNULL
    subprocess.run(
        ["bash", "-c", prefix + world.script()], check=True, timeout=1800, stdout=quiet, stderr=quiet
    )
    script, script_cpu = time.monotonic() - started, busy_cpu_seconds() - cpu_before
    world.check_migrated()

    world.fresh_target()
    settle()
    kwargs = [f"{k}={v}" for k, v in world.definition(pair.minion_id).items()]
    mig_id = f"bench-{label}-{round_no}-{world.uuid[:8]}"
    started, cpu_before = time.monotonic(), busy_cpu_seconds()
    rc, ret, err = pair.run("v2v.migrate", mig_id, "quiet=True", *kwargs)
    runner, runner_cpu = time.monotonic() - started, busy_cpu_seconds() - cpu_before
    if rc != 0 or not ret or ret.get("state") != "success":
        raise SystemExit(f"runner failed (rc {rc}): {ret} {err[-2000:]}")
    world.check_migrated()
    tasks = pair.journal(mig_id)["flow"]["tasks"]
    t_first = min(t["started"] for t in tasks.values())
    for name, task in sorted(tasks.items(), key=lambda item: item[1]["started"]):
        print(f"    {name:58s} {task['started'] - t_first:6.2f} -> {task['ended'] - t_first:6.2f} s")
    print(
        f"{label} round {round_no}: script {script:.2f} s, salt-run v2v.migrate {runner:.2f} s "
        f"(flow {ret['seconds']:.2f} s, runner overhead {ret['overhead_seconds']:.2f} s)",
        flush=True,
    )
    return script, runner, ret["seconds"], ret["overhead_seconds"], headroom, (script_cpu, runner_cpu)


def report(title, rounds):
    script = statistics.median(r[0] for r in rounds)
    runner = statistics.median(r[1] for r in rounds)
    flow = statistics.median(r[2] for r in rounds)
    overhead = max(r[3] for r in rounds)
    print(title)
    print(f"  {'plain shell script (sequential)':40s} {script:8.2f} s  1.00x")
    print(f"  {'salt-run v2v.migrate':40s} {runner:8.2f} s  {script / runner:.2f}x")
    print(f"  {'  of which the flow (journalled steps)':40s} {flow:8.2f} s  {script / flow:.2f}x")
    print(f"  {'  of which salt-run start + preflight':40s} {runner - flow:8.2f} s")
    print(
        f"  {'runner overhead (max, outside commands)':40s} {overhead:8.2f} s  target < 2 s: "
        f"{'met' if overhead < 2 else 'MISSED'}"
    )
    print(f"  runner faster than the script: {'yes' if runner < script else 'NO'}")
    script_cpu = statistics.median(r[5][0] for r in rounds)
    runner_cpu = statistics.median(r[5][1] for r in rounds)
    cores = os.cpu_count()
    print(
        f"  CPU time used machine-wide: script {script_cpu:.2f} s, runner {runner_cpu:.2f} s; on {cores} CPUs "
        f"the runner cannot finish in under {runner_cpu / cores:.2f} s"
    )
    print("  headroom: the script's per-disk commands alone, no Salt")
    saving = 0.0
    for phase in ("copies", "imports"):
        one_by_one = statistics.median(r[4][phase][0] for r in rounds)
        side_by_side = statistics.median(r[4][phase][1] for r in rounds)
        saving += max(0.0, one_by_one - side_by_side)
        print(
            f"    {phase:8s} one after another {one_by_one:6.2f} s, side by side {side_by_side:6.2f} s, "
            f"speed-up {one_by_one / side_by_side:.2f}x"
        )
    print(
        f"    the parallel phases can save at most {saving:.2f} s here; salt-run start + preflight "
        f"alone cost {runner - flow:.2f} s"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--disk-mib", type=int, default=256)
    parser.add_argument(
        "--link-mib-s",
        default="64,128",
        help="per-stream rates of the copies from a remote Xen host, comma-separated "
        "(one scenario each; 0 or empty: none)",
    )
    parser.add_argument("--trace", action="store_true", help="print each script command with its start time")
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="opsalt-v2v-bench-")
    disk_bytes = args.disk_mib * MiB
    rates = [float(r) for r in args.link_mib_s.split(",") if r.strip() and float(r) > 0]
    scenarios = [("one-box", 0)] + [(f"remote-xen-{rate:g}", rate) for rate in rates]
    ceph = CephCluster(
        os.path.join(root, "ceph"),
        block_bytes=max(4 * 1024**3, 12 * disk_bytes * args.rounds * len(scenarios)),
    )
    pair = None
    results = {}
    try:
        t0 = time.monotonic()
        ceph.start()
        print(f"ceph up in {time.monotonic() - t0:.1f} s", flush=True)
        standins = Standins(os.path.join(root, "world"))
        world = World(ceph, standins, root, disk_bytes)
        pair = SaltPair(
            os.path.join(root, "salt"), {"v2v": {"tools": standins.tool_paths, "ceph": ceph.client_config}}
        ).start()
        print("salt-master and salt-minion up", flush=True)
        # not counted: the first copies on a fresh tree run several times slower
        world.headroom("warm-up")
        for label, link in scenarios:
            standins.control({"rate": {"dd": link * MiB}} if link else {})
            results[label] = [run_round(world, pair, label, n, args.trace) for n in range(1, args.rounds + 1)]
    finally:
        if pair is not None:
            pair.stop()
        ceph.stop()
        shutil.rmtree(root, ignore_errors=True)
    for label, rate in scenarios:
        where = (
            f"remote Xen host, each copy stream paced at {rate:g} MiB/s"
            if rate
            else "one box, copies as fast as this machine goes"
        )
        print()
        report(
            f"v2v benchmark, {where}: 2 disks x {args.disk_mib} MiB, {args.rounds} rounds (median)",
            results[label],
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
