#!/usr/bin/env python3
"""
Stand-ins for the tools a Xen+LVM to KVM+Ceph migration runs: ``ssh`` to the
Xen host (with ``dd``, ``blockdev``, ``virsh`` behind it), ``virsh`` (Xen side
over ``xen+ssh://``, compute side otherwise), ``virt-v2v``,
``virt-v2v-copy-to-local``, ``nbdkit`` and an ``rbd`` that passes through to
the real one. They keep their world in a state directory:

``xen/hosts``                 host names that answer ssh, one per line
``xen/domains/<dom>.xml``     the Xen guest's libvirt XML (disks are block devices)
``xen/domains/<dom>.state``   ``running`` or ``shut off``
``xen/dev/...``               the "block devices" (``/dev/vg/lv`` -> ``xen/dev/vg/lv``)
``compute/domains/<dom>.state``
``control.json``              ``{"fail": {"<point>[@<substring>]": times}, "skip": {same key: calls},
                              "slow": {"<point>": seconds}, "rate": {"dd": bytes per second}}``
``calls.log``                 one line per invocation (tool and argv)

A fail point fires ``times`` times (``-1``: always) when the call's argv
contains ``substring``; the tool then fails the way the real one does (exit
code and message), after letting ``skip`` matching calls pass. Fail points: ``ssh``, ``dd``, ``xen-virsh-<cmd>``,
``compute-virsh-<cmd>``, ``copy-to-local``, ``virt-v2v``, ``rbd-<cmd>``, and
``compute-crash-after-start`` (``virsh start`` succeeds, the guest dies at once).
"""

import fcntl
import json
import os
import re
import shlex
import sys
import time
import xml.etree.ElementTree as ET

ROOT = os.environ.get("V2V_STANDIN_ROOT", "")
REAL_RBD = os.environ.get("V2V_STANDIN_REAL_RBD", "/usr/bin/rbd")
CHUNK = 1024 * 1024


def _path(*parts):
    return os.path.join(ROOT, *parts)


def log_call(tool, argv):
    with open(_path("calls.log"), "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"tool": tool, "argv": argv, "t": time.time(), "pid": os.getpid()}) + "\n")


def _control_update(mutate):
    path = _path("control.json")
    with open(path, "a+", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        text = handle.read()
        control = json.loads(text) if text.strip() else {}
        result = mutate(control)
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(control))
        return result


def should_fail(point, argv):
    """
    Consume one firing of a matching fail point; True when the call must fail.
    """
    joined = " ".join(argv)

    def mutate(control):
        fails = control.get("fail", {})
        skips = control.setdefault("skip", {})
        for key, times in list(fails.items()):
            name, _sep, match = key.partition("@")
            if name == point and (not match or match in joined) and times != 0:
                if skips.get(key, 0) > 0:
                    skips[key] -= 1
                    return False
                if times > 0:
                    fails[key] = times - 1
                return True
        return False

    return _control_update(mutate)


def _control_value(section, point):
    return _control_update(lambda control: control.get(section, {}).get(point, 0))


def slow(point):
    delay = _control_value("slow", point)
    if delay:
        time.sleep(float(delay))


def die(message, code=1):
    sys.stderr.write(message.rstrip("\n") + "\n")
    sys.exit(code)


# -- virsh -----------------------------------------------------------------


def _domain_files(side, domain):
    base = _path(side, "domains", domain)
    return base + ".xml", base + ".state"


def _state(side, domain):
    _xml, state = _domain_files(side, domain)
    try:
        with open(state, encoding="utf-8") as handle:
            return handle.read().strip()
    except FileNotFoundError:
        die(
            f"error: failed to get domain '{domain}'\n"
            "error: Domain not found: no domain with matching name '{domain}'"
        )


def _set_state(side, domain, value):
    _xml, state = _domain_files(side, domain)
    with open(state + ".tmp", "w", encoding="utf-8") as handle:
        handle.write(value + "\n")
    os.replace(state + ".tmp", state)


def virsh(argv):  # noqa: C901 - a stand-in CLI: one branch per subcommand
    uri = None
    args = list(argv)
    while args and args[0].startswith("-"):
        opt = args.pop(0)
        if opt in ("-c", "--connect"):
            uri = args.pop(0)
        elif opt.startswith("--connect="):
            uri = opt.split("=", 1)[1]
    side = "xen" if uri and uri.startswith("xen") else "compute"
    if side == "xen":
        host = re.sub(r"^xen\+ssh://(?:[^@/]+@)?([^/:?]+).*$", r"\1", uri)
        _require_host(host, "virsh")
    if not args:
        die("error: no command given")
    cmd, rest = args[0], args[1:]
    if cmd == "version":
        print("Compiled against library: libvirt 9.0.0\nUsing library: libvirt 9.0.0")
        return 0
    if cmd == "uri":
        print(uri or "qemu:///system")
        return 0
    if cmd == "list":
        print(" Id   Name   State\n" + "-" * 24)
        for name in sorted(os.listdir(_path(side, "domains"))):
            if name.endswith(".state"):
                dom = name[: -len(".state")]
                print(f" -    {dom}   {_state(side, dom)}")
        return 0
    if not rest:
        die(f"error: command '{cmd}' requires <domain> option")
    domain = rest[0]
    state = _state(side, domain)
    slow(f"{side}-virsh-{cmd}")
    if should_fail(f"{side}-virsh-{cmd}", argv):
        die(f"error: Failed to {cmd} domain '{domain}'\nerror: internal error: injected failure")
    if cmd == "domstate":
        print(state + "\n")
    elif cmd == "dumpxml":
        xml_file, _state_file = _domain_files(side, domain)
        with open(xml_file, encoding="utf-8") as handle:
            sys.stdout.write(handle.read())
    elif cmd in ("shutdown", "destroy"):
        if state != "running":
            die(
                f"error: Failed to {cmd} domain '{domain}'\nerror: Requested operation is not valid: "
                "domain is not running"
            )
        _set_state(side, domain, "shut off")
        print(f"Domain '{domain}' " + ("is being shutdown\n" if cmd == "shutdown" else "destroyed\n"))
    elif cmd == "start":
        if state == "running":
            die(
                f"error: Failed to start domain '{domain}'\nerror: Requested operation is not valid: "
                "domain is already active"
            )
        crashed = side == "compute" and should_fail("compute-crash-after-start", argv)
        _set_state(side, domain, "shut off" if crashed else "running")
        print(f"Domain '{domain}' started\n")
    else:
        die(f"error: unknown command: '{cmd}'")
    return 0


# -- ssh to the Xen host ---------------------------------------------------------


def _require_host(host, tool):
    try:
        with open(_path("xen", "hosts"), encoding="utf-8") as handle:
            hosts = handle.read().split()
    except FileNotFoundError:
        hosts = []
    if host not in hosts:
        if tool == "virsh":
            die(
                f"error: failed to connect to the hypervisor\nerror: Cannot recv data: "
                f"ssh: Could not resolve hostname {host}: Name or service not known"
            )
        die(f"ssh: Could not resolve hostname {host}: Name or service not known", 255)


def _xen_dev(path):
    if not path.startswith("/dev/"):
        return None
    return _path("xen", "dev", path[len("/dev/") :])


def ssh(argv):
    args = list(argv)
    with_arg = set("bcDEeFIiJLlmOopQRSWw")
    while args and args[0].startswith("-"):
        opt = args.pop(0)
        if len(opt) == 2 and opt[1] in with_arg:
            args.pop(0)
    if not args:
        die("usage: ssh destination [command]", 255)
    host = args.pop(0).split("@")[-1]
    _require_host(host, "ssh")
    if should_fail("ssh", argv):
        die(f"root@{host}: Permission denied (publickey,gssapi-keyex,gssapi-with-mic,password).", 255)
    remote = shlex.split(" ".join(args))
    if not remote:
        die("Pseudo-terminal will not be allocated because stdin is not a terminal.", 255)
    cmd = remote[0]
    if cmd == "true":
        return 0
    if cmd == "echo":
        print(" ".join(remote[1:]))
        return 0
    if cmd == "virsh":
        return virsh(["-c", f"xen+ssh://root@{host}/"] + remote[1:])
    if cmd == "blockdev" and remote[1:2] == ["--getsize64"]:
        dev = _xen_dev(remote[2])
        if dev is None or not os.path.exists(dev):
            die(f"blockdev: cannot open {remote[2]}: No such file or directory")
        print(os.path.getsize(dev))
        return 0
    if cmd == "dd":
        return _dd(remote[1:], argv)
    die(f"bash: {cmd}: command not found", 127)
    return 127


def _dd(operands, argv):
    opts = dict(op.split("=", 1) for op in operands if "=" in op)
    if "status" in opts:
        # CentOS 5's coreutils 5.97 has no status= operand
        die(f"dd: invalid operand `status={opts['status']}'\nTry `dd --help' for more information.")
    dev = _xen_dev(opts.get("if", ""))
    if dev is None or not os.path.exists(dev):
        die(f"dd: opening `{opts.get('if')}': No such file or directory")
    slow("dd")
    fail = should_fail("dd", argv)
    # "rate": {"dd": bytes per second} paces each stream like a link from a
    # remote Xen host (its ssh cipher, its disks) would
    rate = float(_control_value("rate", "dd"))
    size = os.path.getsize(dev)
    sent = 0
    out = sys.stdout.buffer
    started = time.monotonic()
    with open(dev, "rb") as src:
        while True:
            if fail and sent >= size // 2:
                out.flush()
                die(f"dd: reading `{opts['if']}': Input/output error\n{sent // 512}+0 records in")
            chunk = src.read(CHUNK)
            if not chunk:
                break
            out.write(chunk)
            sent += len(chunk)
            if rate:
                ahead = sent / rate - (time.monotonic() - started)
                if ahead > 0:
                    out.flush()
                    time.sleep(ahead)
    out.flush()
    blocks = sent // 512
    sys.stderr.write(f"{blocks}+0 records in\n{blocks}+0 records out\n{sent} bytes copied, 0.1 s\n")
    return 0


# -- virt-v2v and friends ------------------------------------------------------


def _copy(src, dst, marker=None):
    tmp = dst + ".part"
    with open(src, "rb") as inp, open(tmp, "wb") as out:
        first = True
        while True:
            chunk = inp.read(CHUNK)
            if not chunk:
                break
            if first and marker:
                chunk = marker + chunk[len(marker) :]
                first = False
            out.write(chunk)
    os.replace(tmp, dst)


def copy_to_local(argv):
    args = list(argv)
    uri = None
    if "-ic" in args:
        i = args.index("-ic")
        uri = args[i + 1]
        del args[i : i + 2]
    if not uri or not args:
        die("virt-v2v-copy-to-local: usage: virt-v2v-copy-to-local -ic xen+ssh://root@xen guest")
    host = re.sub(r"^xen\+ssh://(?:[^@/]+@)?([^/:?]+).*$", r"\1", uri)
    _require_host(host, "ssh")
    domain = args[0]
    state = _state("xen", domain)
    if state != "shut off":
        die(
            f"virt-v2v-copy-to-local: error: guest ‘{domain}’ is running or paused. It must be shut down "
            "in order to perform virt-v2v conversion"
        )
    slow("copy-to-local")
    if should_fail("copy-to-local", argv):
        die("virt-v2v-copy-to-local: error: ssh: connection to xen host lost")
    xml_file, _state_file = _domain_files("xen", domain)
    tree = ET.parse(xml_file)
    for index, disk in enumerate(tree.getroot().iter("disk"), 1):
        if disk.get("device", "disk") != "disk":
            continue
        source = disk.find("source")
        local = os.path.abspath(f"{domain}-disk{index}")
        _copy(_xen_dev(source.get("dev") or source.get("file")), local)
        disk.set("type", "file")
        source.attrib.clear()
        source.set("file", local)
    tree.write(f"{domain}.xml")
    return 0


def virt_v2v(argv):  # noqa: C901 - a stand-in CLI: one branch per option
    if argv == ["--version"]:
        print("virt-v2v 2.2.0")
        return 0
    if argv == ["--machine-readable"]:
        print(
            "virt-v2v-2.0\nlibguestfs-rewrite\ncolours-option\nvddk-io-query\nmac-option\n"
            "input:disk\ninput:libvirt\ninput:libvirtxml\ninput:ova\ninput:vmx\n"
            "output:libvirt\noutput:local\noutput:null\noutput:openstack\noutput:qemu\n"
            "convert:linux\nconvert:windows"
        )
        return 0
    args = list(argv)
    opts = {}
    flags = set()
    while args:
        arg = args.pop(0)
        if arg in ("-i", "-o", "-os", "-on", "-of", "-oa", "-ic"):
            opts[arg] = args.pop(0)
        elif arg.startswith("-"):
            flags.add(arg)
        else:
            opts["input"] = arg
    if opts.get("-i") != "libvirtxml" or opts.get("-o") != "local" or "-os" not in opts:
        die("virt-v2v: error: this stand-in supports -i libvirtxml -o local -os DIR only")
    if not os.path.exists(os.path.join(os.environ.get("V2V_STANDIN_BIN", ""), "nbdkit")):
        die("virt-v2v: error: nbdkit is not installed or not working")
    machine = "--machine-readable" in flags
    tmpdir = os.environ.get("VIRT_V2V_TMPDIR") or os.environ.get("LIBGUESTFS_CACHEDIR") or "/var/tmp"
    if not os.path.isdir(tmpdir):
        die(f"virt-v2v: error: temporary directory {tmpdir} does not exist")

    def say(text):
        if machine:
            print(
                json.dumps(
                    {"message": text, "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"), "type": "message"}
                ),
                flush=True,
            )
        else:
            print(f"[   0.0] {text}", flush=True)

    try:
        tree = ET.parse(opts["input"])
    except (OSError, ET.ParseError) as err:
        die(f"virt-v2v: error: cannot parse {opts['input']}: {err}")
    name = opts.get("-on") or tree.getroot().findtext("name")
    say(f"Setting up the source: -i libvirtxml {opts['input']}")
    sources = []
    for disk in tree.getroot().iter("disk"):
        if disk.get("device", "disk") != "disk":
            continue
        source = disk.find("source")
        path = source.get("file") if source is not None else None
        if disk.get("type") != "file" or not path or not os.path.exists(path):
            die(f"virt-v2v: error: nbdkit: file: open: {path or source.attrib}: No such file or directory")
        sources.append(path)
    say("Opening the source\nInspecting the source\nChecking for sufficient free disk space in the guest")
    slow("virt-v2v")
    if should_fail("virt-v2v", argv):
        die(
            "virt-v2v: error: inspection could not detect the source guest (or physical machine).\n\n"
            "If reporting bugs, run virt-v2v with debugging enabled and include the complete output:\n\n"
            "  virt-v2v -v -x [...]",
            1,
        )
    say("Converting Windows Server 2008 R2 Standard to run on KVM")
    out_dir = opts["-os"]
    letters = "abcdefghijklmnopqrstuvwxyz"
    for index, path in enumerate(sources):
        say(f"Copying disk {index + 1}/{len(sources)}")
        _copy(path, os.path.join(out_dir, f"{name}-sd{letters[index]}"), marker=b"V2V-CONVERTED\0")
    root = ET.Element("domain", type="kvm")
    ET.SubElement(root, "name").text = name
    devices = ET.SubElement(root, "devices")
    for index in range(len(sources)):
        disk = ET.SubElement(devices, "disk", type="file", device="disk")
        ET.SubElement(disk, "driver", name="qemu", type="raw")
        ET.SubElement(disk, "source", file=os.path.join(out_dir, f"{name}-sd{letters[index]}"))
        ET.SubElement(disk, "target", dev=f"sd{letters[index]}", bus="virtio")
    ET.ElementTree(root).write(os.path.join(out_dir, f"{name}.xml"))
    say("Finishing off")
    return 0


def nbdkit(argv):
    if argv[:1] == ["--version"]:
        print("nbdkit 1.32.5")
        return 0
    die("nbdkit: this stand-in only answers --version")
    return 1


def rbd(argv):
    commands = ("ls", "info", "status", "rename", "mv", "import", "export", "rm", "remove", "create")
    for cmd in [a for a in argv if a in commands][:1]:
        if should_fail(f"rbd-{cmd}", argv):
            die(f"rbd: {cmd} failed: (5) Input/output error", 5)
        slow(f"rbd-{cmd}")
    os.execv(REAL_RBD, [REAL_RBD] + argv)


TOOLS = {
    "ssh": ssh,
    "virsh": virsh,
    "virt-v2v": virt_v2v,
    "virt-v2v-copy-to-local": copy_to_local,
    "nbdkit": nbdkit,
    "rbd": rbd,
}


def main():
    if not ROOT:
        die("V2V_STANDIN_ROOT is not set")
    tool, argv = sys.argv[1], sys.argv[2:]
    log_call(tool, argv)
    return TOOLS[tool](argv)


if __name__ == "__main__":
    sys.exit(main())
