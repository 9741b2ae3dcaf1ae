"""
The stand-in world for v2v tests: a bin directory of wrapper scripts (``ssh``,
``virsh``, ``virt-v2v``, ``virt-v2v-copy-to-local``, ``nbdkit``, ``rbd``) that
run ``standin.py`` against one state directory, plus helpers to create Xen
guests with LVM-like disks, compute domains and fault injections.
"""

import json
import os
import shutil
import sys

STANDIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "standin.py")
TOOLS = ("ssh", "virsh", "virt-v2v", "virt-v2v-copy-to-local", "nbdkit", "rbd")
XEN_HOST = "xen-legacy01"


class Standins:
    """
    A stand-in world under ``root``; ``bin`` holds the executables.
    """

    def __init__(self, root, tools=TOOLS, real_rbd=None):
        self.root = os.path.abspath(root)
        self.bin = os.path.join(self.root, "bin")
        for sub in ("bin", "xen/domains", "xen/dev", "compute/domains"):
            os.makedirs(os.path.join(self.root, sub), exist_ok=True)
        real_rbd = real_rbd or shutil.which("rbd") or "/usr/bin/rbd"
        for tool in tools:
            self.install(tool, real_rbd)
        self.set_hosts([XEN_HOST])
        self.control({})

    def install(self, tool, real_rbd="/usr/bin/rbd"):
        path = os.path.join(self.bin, tool)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(
                "#!/bin/sh\n"
                f"V2V_STANDIN_ROOT='{self.root}' V2V_STANDIN_BIN='{self.bin}' "
                f"V2V_STANDIN_REAL_RBD='{real_rbd}' "
                # -S: the stand-in needs only the standard library; skipping
                # the venv's site start-up keeps a stand-in about as cheap as
                # the real tool it replaces (the benchmarks count its CPU)
                f"exec '{sys.executable}' -S '{STANDIN}' {tool} \"$@\"\n"
            )
        os.chmod(path, 0o755)

    def uninstall(self, tool):
        os.unlink(os.path.join(self.bin, tool))

    def tool(self, name):
        return os.path.join(self.bin, name)

    @property
    def tool_paths(self):
        """
        The ``v2v:tools`` settings pointing at the stand-ins present.
        """
        return {name: self.tool(name) for name in TOOLS if os.path.exists(self.tool(name))}

    # -- the world --------------------------------------------------------------

    def set_hosts(self, hosts):
        with open(os.path.join(self.root, "xen", "hosts"), "w", encoding="utf-8") as handle:
            handle.write("\n".join(hosts) + "\n")

    def add_xen_guest(self, name, disk_sizes, state="running", seed=1):
        """
        A Xen guest whose disks are LVs ``/dev/vg_xen/<name>-disk<N>``, filled
        with deterministic pseudo-random bytes. Returns the device paths.
        """
        devices = []
        disks_xml = []
        for index, size in enumerate(disk_sizes):
            dev = f"/dev/vg_xen/{name}-disk{index}"
            path = self.xen_device_path(dev)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            write_pattern(path, size, seed * 1000 + index)
            devices.append(dev)
            disks_xml.append(
                f"    <disk type='block' device='disk'>\n"
                f"      <driver name='phy'/>\n"
                f"      <source dev='{dev}'/>\n"
                f"      <target dev='xvd{'abcdefgh'[index]}' bus='xen'/>\n"
                f"    </disk>\n"
            )
        xml = (
            f"<domain type='xen'>\n  <name>{name}</name>\n  <memory unit='KiB'>4194304</memory>\n"
            f"  <os><type>hvm</type></os>\n  <devices>\n"
            + "".join(disks_xml)
            + "    <disk type='file' device='cdrom'><target dev='hdc' bus='ide'/></disk>\n"
            "  </devices>\n</domain>\n"
        )
        with open(os.path.join(self.root, "xen", "domains", f"{name}.xml"), "w", encoding="utf-8") as handle:
            handle.write(xml)
        self.set_state("xen", name, state)
        return devices

    def xen_device_path(self, dev):
        return os.path.join(self.root, "xen", "dev", dev[len("/dev/") :])

    def add_compute_domain(self, name, state="running"):
        self.set_state("compute", name, state)

    def set_state(self, side, name, state):
        with open(os.path.join(self.root, side, "domains", f"{name}.state"), "w", encoding="utf-8") as handle:
            handle.write(state + "\n")

    def state(self, side, name):
        with open(os.path.join(self.root, side, "domains", f"{name}.state"), encoding="utf-8") as handle:
            return handle.read().strip()

    # -- control ---------------------------------------------------------------

    def control(self, control):
        """
        Replace the fault/slowness control: ``{"fail": {...}, "slow": {...},
        "rate": {"dd": bytes per second}}``.
        """
        path = os.path.join(self.root, "control.json")
        with open(path + ".tmp", "w", encoding="utf-8") as handle:
            json.dump(control, handle)
        os.replace(path + ".tmp", path)

    def fail(self, point, times=1, skip=0):
        self.control({"fail": {point: times}, "skip": {point: skip}})

    def calls(self, tool=None):
        try:
            with open(os.path.join(self.root, "calls.log"), encoding="utf-8") as handle:
                entries = [json.loads(line) for line in handle if line.strip()]
        except FileNotFoundError:
            return []
        return [e for e in entries if tool is None or e["tool"] == tool]


def write_pattern(path, size, seed):
    """
    ``size`` bytes of reproducible pseudo-random data (a hash chain: fast and
    never all zeros, so a lost or shifted block changes every checksum).
    """
    import hashlib

    block = hashlib.sha512(str(seed).encode()).digest() * 2048  # 128 KiB
    with open(path, "wb") as handle:
        written = 0
        counter = 0
        while written < size:
            head = hashlib.sha512(f"{seed}:{counter}".encode()).digest()
            piece = (head + block)[: min(len(block), size - written)]
            handle.write(piece)
            written += len(piece)
            counter += 1
