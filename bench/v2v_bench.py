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

``--wave`` (issue 16) measures a wave instead: ``--vms`` VMs (default 4),
each with two disks, migrated three ways in the same run, on the same
stand-ins and cluster:

- ``one after another``: the plain script of each VM, run in turn;
- ``script, N at a time``: the same scripts through ``xargs -P N``;
- ``wave``: ``salt-run v2v.migrate_wave <wave> concurrency=N`` (default 2),
  the definitions and the wave from the master's pillar
  (``v2v:migrations``, ``v2v:waves``).

The order of the three rotates from round to round. Scenarios: one box and
remote Xen at 64 MiB/s per stream (``--link-mib-s``). Prints the wall
times, the ratios against the two baselines, the machine-wide CPU time of
each way and the bound it sets on two CPUs, and where the wave's time goes
(``salt-run`` start-up, pillar and validation; each member's preflight and
flow; the runner's own overhead).

Usage: .venv/bin/python bench/v2v_bench.py [--rounds N] [--disk-mib 256] [--link-mib-s 64,128] [--trace]
       .venv/bin/python bench/v2v_bench.py --wave [--vms 4] [--concurrency 2] [--rounds N] [--link-mib-s 64]
"""

import argparse
import contextlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import psutil
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
        # the master's pillar: a wave's definitions (v2v:migrations, v2v:waves)
        self.pillar_dir = os.path.join(root, "pillar")
        os.makedirs(self.pillar_dir)
        with open(os.path.join(self.pillar_dir, "top.sls"), "w", encoding="utf-8") as handle:
            yaml.safe_dump({"base": {"*": ["v2v"]}}, handle)
        self.set_v2v_pillar({})
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
            pillar_roots={"base": [self.pillar_dir]},
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

    def set_v2v_pillar(self, v2v):
        with open(os.path.join(self.pillar_dir, "v2v.sls"), "w", encoding="utf-8") as handle:
            yaml.safe_dump({"v2v": v2v}, handle)

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
    def __init__(
        self,
        ceph,
        standins,
        work_root,
        disk_bytes,
        source="instance-00000017",
        target="instance-000007a2",
        seed=1,
        template=None,
    ):
        self.ceph, self.standins, self.work_root = ceph, standins, work_root
        self.source, self.target = source, target
        self.devices = standins.add_xen_guest(
            self.source, [disk_bytes, disk_bytes], state="shut off", seed=seed
        )
        self.disk_bytes = disk_bytes
        self.template = template
        if template is None:
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

    def check_migrated(self, names=None):
        if names is None:
            names = set(self.ceph.rbd("ls", "-p", POOL).stdout.decode().split())
        assert {f"{i}.bak" for i in self.images} <= names, f"{self.source}: originals not kept as .bak"
        assert set(self.images) <= names, f"{self.source}: images missing"
        assert self.standins.state("compute", self.target) == "running"

    def discard(self):
        """
        Remove this round's images and local copies: a wave round holds
        four images per VM, and the next round starts from fresh ones.
        """
        for image in self.images:
            for name in (image, image + ".bak"):
                self.ceph.rbd("rm", "--no-progress", f"{POOL}/{name}", timeout=600, check=False)
        shutil.rmtree(self.work_dir, ignore_errors=True)


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


# -- the wave (issue 16) ------------------------------------------------------------

WAVE_WAYS = ("one after another", "script, N at a time", "wave")
CPU_GROUPS = ("tools and salt-run", "salt-minion", "salt-master", "ceph", "rest of the machine")


def tree_cpu_seconds(pid):
    """
    CPU time of a process and its descendants, the exited ones included
    (their time is in their parent's children times once reaped).
    """
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


class CpuMeter:
    """
    Where the CPU time of a run goes, by process group: this benchmark's
    own children (the scripts and every tool they run; ``salt-run``), the
    salt-minion tree (its jobs and the tools they run), the salt-master
    tree, the Ceph daemons, and the rest of the machine (other work on a
    shared box, the kernel's threads). Own CPU is all but the rest, so a
    busy neighbour does not count against either way.
    """

    def __init__(self, pair, ceph):
        self.pair, self.ceph = pair, ceph

    def sample(self):
        own = resource.getrusage(resource.RUSAGE_CHILDREN)
        groups = {
            "tools and salt-run": own.ru_utime + own.ru_stime,
            "salt-minion": tree_cpu_seconds(self.pair.procs[1].pid),
            "salt-master": tree_cpu_seconds(self.pair.procs[0].pid),
            "ceph": sum(tree_cpu_seconds(pid) for pid in self.ceph.pids.values()),
        }
        groups["rest of the machine"] = busy_cpu_seconds() - sum(groups.values())
        return groups

    @staticmethod
    def delta(before, after):
        return {group: after[group] - before[group] for group in CPU_GROUPS}


def tool_calls(standins):
    """How many times each stand-in tool (ssh, virsh, virt-v2v, rbd, ...) ran so far."""
    counts = {}
    for call in standins.calls():
        counts[call["tool"]] = counts.get(call["tool"], 0) + 1
    return counts


def wave_worlds(ceph, standins, root, disk_bytes, count):
    """
    ``count`` VMs, each a Xen guest with two disks of its own and a target
    instance of its own, sharing one template for the target images.
    """
    template = os.path.join(root, "target-template.raw")
    write_pattern(template, disk_bytes, 4242)
    return [
        World(
            ceph,
            standins,
            root,
            disk_bytes,
            source=f"instance-000001{n:02d}",
            target=f"instance-00000b{n:02d}",
            seed=100 + n,
            template=template,
        )
        for n in range(1, count + 1)
    ]


def _run_scripts(worlds, root, at_once):
    """The plain scripts: one after another (``at_once`` 1) or ``xargs -P at_once``."""
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    if at_once == 1:
        for world in worlds:
            subprocess.run(["bash", "-c", world.script()], check=True, timeout=1800, **quiet)
        return
    paths = []
    for world in worlds:
        path = os.path.join(root, f"script-{world.source}.sh")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(world.script())
        paths.append(path)
    # xargs exits 123 when any script failed
    subprocess.run(
        ["xargs", "-0", "-n", "1", "-P", str(at_once), "bash"],
        input="\0".join(paths).encode(),
        check=True,
        timeout=1800,
        **quiet,
    )


def _salt_wave(worlds, pair, name, concurrency):
    ids = [f"{name}-vm{n}" for n in range(1, len(worlds) + 1)]
    pair.set_v2v_pillar(
        {
            "migrations": {mig_id: w.definition(pair.minion_id) for mig_id, w in zip(ids, worlds)},
            "waves": {name: ids},
        }
    )
    started = time.monotonic()
    rc, ret, err = pair.run(
        "v2v.migrate_wave",
        name,
        f"pillar_minion={pair.minion_id}",
        f"concurrency={concurrency}",
        "quiet=True",
    )
    took = time.monotonic() - started
    if rc != 0 or not ret or ret.get("state") != "success":
        raise SystemExit(f"wave failed (rc {rc}): {json.dumps(ret)[:3000]} {err[-2000:]}")
    journals = {mig_id: pair.journal(mig_id) for mig_id in ids}
    return took, ret, journals


def wave_breakdown(took, ret, journals):
    """
    Where the wave's wall time went: ``salt-run`` start-up, pillar and
    validation (outside the wave's own clock), and per member the time
    before its flow (lock, preflight) and the runner's own overhead in the
    flow (no minion call in flight).
    """
    members = {}
    for mig_id, journal in journals.items():
        run = journal["runs"][-1]
        entry = ret["migrations"][mig_id]
        flow = run["seconds"]
        members[mig_id] = {
            "seconds": entry["seconds"],
            "mib_per_s": entry["mib_per_s"],
            "flow": flow,
            "before_flow": entry["seconds"] - flow,
            "overhead": run["overhead_seconds"],
        }
    return {"outside": took - ret["seconds"], "wave": ret["seconds"], "members": members}


def run_wave_round(worlds, pair, meter, root, label, round_no, concurrency):
    """
    The three ways once each, in an order that rotates with the round.
    Returns ``{way: (wall s, {CPU group: s}, {tool: calls})}`` and the
    wave's breakdown.
    """
    order = WAVE_WAYS[round_no % 3 :] + WAVE_WAYS[: round_no % 3]
    standins = worlds[0].standins
    timings, breakdown = {}, None
    for way in order:
        for world in worlds:
            world.fresh_target()
        settle()
        calls_before = tool_calls(standins)
        started, cpu_before = time.monotonic(), meter.sample()
        if way == "wave":
            _took, ret, journals = _salt_wave(worlds, pair, f"{label}-r{round_no}", concurrency)
        else:
            _run_scripts(worlds, root, 1 if way == "one after another" else concurrency)
        wall, cpu = time.monotonic() - started, CpuMeter.delta(cpu_before, meter.sample())
        calls = {tool: n - calls_before.get(tool, 0) for tool, n in tool_calls(standins).items()}
        timings[way] = (wall, cpu, calls)
        names = set(worlds[0].ceph.rbd("ls", "-p", POOL).stdout.decode().split())
        for world in worlds:
            world.check_migrated(names)
            world.discard()
        if way == "wave":
            breakdown = wave_breakdown(timings[way][0], ret, journals)
            print("    " + "\n    ".join(ret["table"]))
    print(
        f"{label} round {round_no}: "
        + ", ".join(f"{way} {timings[way][0]:.2f} s" for way in WAVE_WAYS)
        + f" (order: {', '.join(order)})",
        flush=True,
    )
    return timings, breakdown


def _own_cpu(cpu):
    return sum(seconds for group, seconds in cpu.items() if group != "rest of the machine")


def report_wave(title, rounds, concurrency):
    walls = {way: statistics.median(r[0][way][0] for r in rounds) for way in WAVE_WAYS}
    cpus = {way: statistics.median(_own_cpu(r[0][way][1]) for r in rounds) for way in WAVE_WAYS}
    names = {
        "one after another": "plain script, one after another",
        "script, N at a time": f"plain script, xargs -P{concurrency}",
        "wave": f"salt-run v2v.migrate_wave concurrency={concurrency}",
    }
    sequential, side_by_side, wave = (walls[way] for way in WAVE_WAYS)
    cores = os.cpu_count()
    print(title)
    print(f"  {'way':44s} {'wall s':>8s} {'vs 1-by-1':>9s} {'CPU s':>7s} {'CPU bound s':>11s}")
    for way in WAVE_WAYS:
        print(
            f"  {names[way]:44s} {walls[way]:8.2f} {sequential / walls[way]:8.2f}x {cpus[way]:7.2f} "
            f"{cpus[way] / cores:11.2f}"
        )
    speedup, against = sequential / wave, wave / side_by_side
    print(
        f"  wave vs one after another: {speedup:.2f}x faster (target >= 1.6x: {'met' if speedup >= 1.6 else 'MISSED'})"
    )
    print(
        f"  wave vs xargs -P{concurrency}: {against:.2f}x its time (target <= 1.1x: "
        f"{'met' if against <= 1.1 else 'MISSED'})"
    )
    print(f"  CPU bound: on {cores} CPUs the wave cannot finish in under {cpus['wave'] / cores:.2f} s")
    print("  CPU s by process group (median; 'CPU s' above is all but the rest of the machine):")
    print(f"    {'group':22s}" + "".join(f"{names[way][:26]:>28s}" for way in WAVE_WAYS))
    for group in CPU_GROUPS:
        cells = [statistics.median(r[0][way][1][group] for r in rounds) for way in WAVE_WAYS]
        print(f"    {group:22s}" + "".join(f"{cell:28.2f}" for cell in cells))
    tools = sorted({tool for r in rounds for way in WAVE_WAYS for tool in r[0][way][2]})
    print("  stand-in tool runs (last round):")
    for tool in tools:
        print(f"    {tool:22s}" + "".join(f"{rounds[-1][0][way][2].get(tool, 0):28d}" for way in WAVE_WAYS))
    parts = [r[1] for r in rounds]
    outside = statistics.median(p["outside"] for p in parts)
    before = statistics.median(max(m["before_flow"] for m in p["members"].values()) for p in parts)
    overhead = max(m["overhead"] for p in parts for m in p["members"].values())
    flows = statistics.median(statistics.mean(m["flow"] for m in p["members"].values()) for p in parts)
    rates = statistics.median(statistics.mean(m["mib_per_s"] for m in p["members"].values()) for p in parts)
    print(
        f"  the wave: salt-run start-up, pillar and validation {outside:.2f} s; per member up to {before:.2f} s "
        f"before its flow (lock, preflight); flow {flows:.2f} s on average, {rates:.1f} MiB/s per VM; "
        f"runner overhead in a flow (no minion call in flight) at most {overhead:.2f} s"
    )


@contextlib.contextmanager
def bench_world(root, block_bytes):
    """
    A one-node Ceph, the stand-ins and a salt-master/minion pair under
    ``root``, as ``(ceph, standins, pair)``; all stopped and ``root``
    removed afterwards.
    """
    ceph = CephCluster(os.path.join(root, "ceph"), block_bytes=block_bytes)
    pair = None
    try:
        t0 = time.monotonic()
        ceph.start()
        print(f"ceph up in {time.monotonic() - t0:.1f} s", flush=True)
        standins = Standins(os.path.join(root, "world"))
        pair = SaltPair(
            os.path.join(root, "salt"), {"v2v": {"tools": standins.tool_paths, "ceph": ceph.client_config}}
        ).start()
        print("salt-master and salt-minion up", flush=True)
        yield ceph, standins, pair
    finally:
        if pair is not None:
            pair.stop()
        ceph.stop()
        shutil.rmtree(root, ignore_errors=True)


def where(rate):
    """A scenario's words for a report title."""
    if rate:
        return f"remote Xen host, each copy stream paced at {rate:g} MiB/s"
    return "one box, copies as fast as this machine goes"


def wave_main(args, root, disk_bytes, scenarios):
    results = {}
    with bench_world(root, max(4 * 1024**3, 6 * args.vms * disk_bytes)) as (ceph, standins, pair):
        worlds = wave_worlds(ceph, standins, root, disk_bytes, args.vms)
        meter = CpuMeter(pair, ceph)
        # not counted: the first copies on a fresh tree run several times slower
        worlds[0].headroom("warm-up")
        for label, link in scenarios:
            standins.control({"rate": {"dd": link * MiB}} if link else {})
            results[label] = [
                run_wave_round(worlds, pair, meter, root, label, n, args.concurrency)
                for n in range(1, args.rounds + 1)
            ]
    load_after = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    for label, rate in scenarios:
        print()
        report_wave(
            f"v2v wave benchmark, {where(rate)}: {args.vms} VMs x 2 disks x {args.disk_mib} MiB, "
            f"{args.rounds} rounds (median); load average before the run {args.load}, after it {load_after}; "
            f"niceness {os.nice(0)}",
            results[label],
            args.concurrency,
        )
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--disk-mib", type=int, default=256)
    parser.add_argument(
        "--link-mib-s",
        default=None,
        help="per-stream rates of the copies from a remote Xen host, comma-separated "
        "(one scenario each; 0 or empty: none); default 64,128 (--wave: 64)",
    )
    parser.add_argument("--trace", action="store_true", help="print each script command with its start time")
    parser.add_argument("--wave", action="store_true", help="benchmark a wave (v2v.migrate_wave) instead")
    parser.add_argument("--vms", type=int, default=4, help="--wave: VMs in the wave")
    parser.add_argument("--concurrency", type=int, default=2, help="--wave: migrations at once")
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="opsalt-v2v-bench-")
    disk_bytes = args.disk_mib * MiB
    if args.link_mib_s is None:
        args.link_mib_s = "64" if args.wave else "64,128"
    rates = [float(r) for r in args.link_mib_s.split(",") if r.strip() and float(r) > 0]
    scenarios = [("one-box", 0)] + [(f"remote-xen-{rate:g}", rate) for rate in rates]
    if args.wave:
        args.load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
        return wave_main(args, root, disk_bytes, scenarios)
    results = {}
    block_bytes = max(4 * 1024**3, 12 * disk_bytes * args.rounds * len(scenarios))
    with bench_world(root, block_bytes) as (ceph, standins, pair):
        world = World(ceph, standins, root, disk_bytes)
        # not counted: the first copies on a fresh tree run several times slower
        world.headroom("warm-up")
        for label, link in scenarios:
            standins.control({"rate": {"dd": link * MiB}} if link else {})
            results[label] = [run_round(world, pair, label, n, args.trace) for n in range(1, args.rounds + 1)]
    for label, rate in scenarios:
        print()
        report(
            f"v2v benchmark, {where(rate)}: 2 disks x {args.disk_mib} MiB, {args.rounds} rounds (median)",
            results[label],
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
