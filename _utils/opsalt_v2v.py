"""
The pure parts of v2v, shared by the execution module (``_modules/v2v.py``)
and the runner (``_runners/v2v.py``): the name patterns (mirrored in
``schema/pillar.schema.json`` ``$defs/v2v``), the migration definition, the
step table, the preflight checks as a table, the libvirt XML and Nova disk
rules, and the command lines of every tool.

No Salt dunders and no I/O: everything here is a function of its arguments,
so the unit tests call it directly and both loaders import it by plain name.
"""

import collections
import os
import re
import shlex
import xml.etree.ElementTree as ET

import opsalt_validate
from salt.exceptions import CommandExecutionError, SaltInvocationError

# -- names ---------------------------------------------------------------------

# Each pattern is also in the schema (tests/unit/utils/test_opsalt_v2v.py holds
# them together); the UUID is matched after lower-casing, the schema takes both.
MIGRATION_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
UUID_ANY_CASE_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
# libvirt domains, RBD pools and images
NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}$"
HOST_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$"
MINION_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,252}$"
USER_PATTERN = r"^[a-z_][a-z0-9_-]{0,31}$"
DEVICE_PATTERN = r"^/dev/[A-Za-z0-9_.+/-]+$"

_ID = re.compile(MIGRATION_ID_PATTERN)
_UUID = re.compile(UUID_PATTERN)
_NAME = re.compile(NAME_PATTERN)
_HOST = re.compile(HOST_PATTERN)
_MINION = re.compile(MINION_PATTERN)
_USER = re.compile(USER_PATTERN)
_DEVICE = re.compile(DEVICE_PATTERN)
_LINE = re.compile(opsalt_validate.LINE_PATTERN)


def check(value, pattern, what):
    """
    ``value`` if it is a string matching ``pattern`` without ``..``; else
    ``SaltInvocationError`` naming ``what``.
    """
    if not isinstance(value, str) or not pattern.fullmatch(value) or ".." in value:
        raise SaltInvocationError(f"invalid {what}: {value!r}")
    return value


def uuid(value):
    """The instance UUID, lower-cased."""
    return check(str(value).lower(), _UUID, "instance UUID (expected 8-4-4-4-12 hex digits)")


def name(value, what):
    """A libvirt domain, pool or image name."""
    return check(value, _NAME, f"{what} (letters, digits, _ . + -, not starting with - or .)")


def host(value):
    """The Xen host's name."""
    return check(value, _HOST, "Xen host name")


def user(value):
    """The ssh user on the Xen host."""
    return check(value, _USER, "ssh user")


def device(value):
    """A block device path of the Xen host."""
    return check(value, _DEVICE, "block device path (expected /dev/...)")


def abspath(value, what="path"):
    """An absolute path without ``..`` or control characters, normalised."""
    if not isinstance(value, str) or not value.startswith("/"):
        raise SaltInvocationError(f"invalid {what}: {value!r} (expected an absolute path)")
    try:
        opsalt_validate.line(value, what)
    except opsalt_validate.ValidationError as err:
        raise SaltInvocationError(f"invalid {what}: {value!r} (expected an absolute path)") from err
    if ".." in value.split("/"):
        raise SaltInvocationError(f"invalid {what}: {value!r} (.. is not allowed)")
    return os.path.normpath(value)


def migration_id(definition, given=None):
    """The migration's id: ``given``, the definition's ``id`` or its source domain."""
    mig_id = given or definition.get("id") or definition.get("source_domain")
    if not isinstance(mig_id, str) or not _ID.fullmatch(mig_id):
        raise SaltInvocationError(f"invalid migration id {mig_id!r} (letters, digits, _ . -; at most 64)")
    return mig_id


# -- the definition -------------------------------------------------------------

FIELDS = {
    "source_host": None,
    "source_user": "root",
    "source_domain": None,
    "shutdown_source": False,
    "conversion_minion": None,
    "compute_minion": None,
    "instance_uuid": None,
    "target_domain": None,
    "pool": "rbd",
    "work_dir": None,
    "copy_method": "auto",
    "parallel": 4,
    "step_timeout": 86400,
}
REQUIRED = (
    "source_host",
    "source_domain",
    "conversion_minion",
    "compute_minion",
    "instance_uuid",
    "target_domain",
    "work_dir",
)
COPY_METHODS = ("auto", "dd", "copy-to-local")
# a migration's work dir is deleted on revert: never one of these
_SHARED_DIRS = ("/", "/tmp", "/var", "/var/tmp", "/data", "/home")
_PATTERN_FIELDS = (
    ("source_host", _HOST, "host name"),
    ("source_user", _USER, "user name"),
    ("source_domain", _NAME, "libvirt domain name"),
    ("target_domain", _NAME, "libvirt domain name"),
    ("conversion_minion", _MINION, "minion id"),
    ("compute_minion", _MINION, "minion id"),
    ("pool", _NAME, "pool name"),
    ("instance_uuid", _UUID, "instance UUID (8-4-4-4-12 hex digits)"),
)


def _given(value):
    return value not in (None, "")


def _pattern_problems(spec):
    return [
        f"{key} {spec[key]!r} is not a valid {what}"
        for key, pattern, what in _PATTERN_FIELDS
        if _given(spec[key])
        and (not isinstance(spec[key], str) or not pattern.fullmatch(spec[key]) or ".." in spec[key])
    ]


def _work_dir_problem(work_dir):
    if (
        not isinstance(work_dir, str)
        or not work_dir.startswith("/")
        or ".." in work_dir.split("/")
        or not _LINE.fullmatch(work_dir)
        or os.path.normpath(work_dir) in _SHARED_DIRS
    ):
        return f"work_dir {work_dir!r} must be an absolute path of its own (not / or a system dir)"
    return None


def _scalar_problems(spec):
    problems = []
    if spec["copy_method"] not in COPY_METHODS:
        problems.append(f"copy_method {spec['copy_method']!r} must be auto, dd or copy-to-local")
    if not isinstance(spec["shutdown_source"], bool):
        problems.append("shutdown_source must be true or false")
    for key, low in (("parallel", 1), ("step_timeout", 10)):
        if not isinstance(spec[key], int) or isinstance(spec[key], bool) or spec[key] < low:
            problems.append(f"{key} must be an integer >= {low}")
    return problems


def validate_definition(definition):
    """
    A migration definition checked and completed with defaults; raises
    ``SaltInvocationError`` listing every problem at once.
    """
    if not isinstance(definition, dict):
        raise SaltInvocationError("the migration definition must be a mapping")
    problems = []
    unknown = sorted(set(definition) - set(FIELDS) - {"id"})
    if unknown:
        problems.append(f"unknown field(s): {', '.join(unknown)} (known: {', '.join(sorted(FIELDS))})")
    spec = {key: definition.get(key, default) for key, default in FIELDS.items()}
    problems += [f"{key} is required" for key in REQUIRED if not _given(spec[key])]
    if isinstance(spec["instance_uuid"], str):
        spec["instance_uuid"] = spec["instance_uuid"].lower()
    problems += _pattern_problems(spec)
    if _given(spec["work_dir"]):
        problem = _work_dir_problem(spec["work_dir"])
        if problem:
            problems.append(problem)
        else:
            spec["work_dir"] = os.path.normpath(spec["work_dir"])
    problems += _scalar_problems(spec)
    if problems:
        raise SaltInvocationError("invalid migration definition: " + "; ".join(problems))
    return spec


# -- libvirt XML and Nova's disks --------------------------------------------------

# Nova's disk names in its images pool, in the order a guest sees them.
NOVA_DISK_ORDER = ("disk", "disk.local")
_EPHEMERAL = re.compile(r"^disk\.eph([0-9]+)$")
BAK = ".bak"
IMPORTING_SUFFIX = ".v2v-importing"


def disks_of(xml_text):
    """
    ``(root, disks)`` of a libvirt domain XML: the parsed tree and its disks
    (not CD-ROMs) in guest order, ``[{type, source, target}]``.
    """
    root = ET.fromstring(xml_text)
    disks = []
    for disk in _guest_disks(root):
        source = disk.find("source")
        target = disk.find("target")
        disks.append(
            {
                "type": disk.get("type"),
                "source": (source.get("dev") or source.get("file")) if source is not None else None,
                "target": target.get("dev") if target is not None else None,
            }
        )
    return root, disks


def _guest_disks(root):
    return [disk for disk in root.iter("disk") if disk.get("device", "disk") == "disk"]


def localized_xml(root, files):
    """
    The domain XML with each disk pointed at its local raw copy (``files``,
    in guest order), for ``virt-v2v -i libvirtxml``.
    """
    for disk, path in zip(_guest_disks(root), files):
        disk.set("type", "file")
        source = disk.find("source")
        source.attrib.clear()
        source.set("file", path)
        driver = disk.find("driver")
        if driver is not None:
            driver.attrib.clear()
            driver.set("name", "qemu")
            driver.set("type", "raw")
    return ET.tostring(root, encoding="unicode")


def is_nova_disk(suffix):
    """True for an image suffix that is a guest disk (not swap, config or a backup)."""
    return suffix in NOVA_DISK_ORDER or bool(_EPHEMERAL.match(suffix))


def nova_sort_key(suffix):
    """Guest order of Nova's image suffixes: disk, disk.local, disk.eph0, disk.eph1, ..."""
    if suffix in NOVA_DISK_ORDER:
        return (NOVA_DISK_ORDER.index(suffix), 0)
    match = _EPHEMERAL.match(suffix)
    if match:
        return (len(NOVA_DISK_ORDER), int(match.group(1)))
    return (99, suffix)


def converted_pattern(domain):
    """The names virt-v2v ``-o local`` gives the disks of ``domain``: ``NAME-sda``, ..."""
    return re.compile(rf"^{re.escape(domain)}-(sd[a-z]+)$")


def converted_name(domain, index):
    """virt-v2v's file name for the guest's ``index``-th disk."""
    return f"{domain}-sd{'abcdefghijklmnopqrstuvwxyz'[index]}"


# -- command lines ------------------------------------------------------------------

DEFAULT_SSH_OPTIONS = ["-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]


def show(argv):
    """An argument list as the shell line a person would type."""
    return shlex.join(str(a) for a in argv)


class Commands:
    """
    The argument lists of every tool, from a host's v2v configuration:
    ``tool(name)`` gives a tool's path, ``ceph`` the client settings
    (``conf``, ``keyring``, ``id``).
    """

    def __init__(self, tool, libvirt_uri="qemu:///system", ssh_options=None, ceph=None):
        self.tool = tool
        self.libvirt_uri = libvirt_uri
        self.ssh_options = DEFAULT_SSH_OPTIONS if ssh_options is None else ssh_options
        self.ceph = ceph or {}

    def ssh(self, host_name, user_name):
        return [self.tool("ssh"), *[str(o) for o in self.ssh_options], f"{user(user_name)}@{host(host_name)}"]

    def remote(self, host_name, user_name, *command):
        # ssh joins its arguments into one remote shell line: quote each word.
        return self.ssh(host_name, user_name) + [shlex.join([str(c) for c in command])]

    @staticmethod
    def xen_uri(host_name, user_name):
        return f"xen+ssh://{user(user_name)}@{host(host_name)}/"

    def xen_virsh(self, host_name, user_name):
        return [self.tool("virsh"), "-c", self.xen_uri(host_name, user_name)]

    def compute_virsh(self):
        return [self.tool("virsh"), "-c", self.libvirt_uri]

    def rbd(self, *args):
        argv = [self.tool("rbd")]
        for option, key in (("--conf", "conf"), ("--keyring", "keyring"), ("--id", "id")):
            if self.ceph.get(key):
                argv += [option, str(self.ceph[key])]
        return argv + [str(a) for a in args]

    def dd(self, host_name, user_name, dev, block_size="4M"):
        return self.remote(host_name, user_name, "dd", f"if={device(dev)}", f"bs={block_size}")

    def copy_to_local(self, host_name, user_name, domain):
        return [self.tool("virt-v2v-copy-to-local"), "-ic", self.xen_uri(host_name, user_name), domain]

    def convert(self, xml_path, out_dir, domain):
        return [
            self.tool("virt-v2v"),
            "-i",
            "libvirtxml",
            xml_path,
            "-o",
            "local",
            "-os",
            out_dir,
            "-of",
            "raw",
            "-on",
            name(domain, "domain name"),
            "--machine-readable",
        ]

    def render(self, step):
        """
        The exact command line of one plan step ``{"op": ..., **arguments}``
        (see :data:`OPS`), without running it.
        """
        step = dict(step)
        op = step.pop("op")
        if op not in OPS:
            raise SaltInvocationError(f"unknown step op {op!r}")
        return OPS[op](self, step, step.get("user", "root"))


def _image_spec(step, key="image"):
    return f"{name(step['pool'], 'pool')}/{name(step[key], 'image')}"


def _render_convert(cmds, step, _user):
    work_dir = abspath(step["work_dir"])
    argv = cmds.convert(abspath(step["xml_path"]), work_dir + "/converted", step["name"])
    return f"VIRT_V2V_TMPDIR={shlex.quote(work_dir + '/tmp')} " + show(argv)


def _render_domain(verb):
    return lambda cmds, step, _user: show(cmds.compute_virsh() + [verb, name(step["domain"], "domain name")])


# op -> (commands, step arguments, ssh user) -> the command line
OPS = {
    "ssh_check": lambda cmds, step, usr: show(cmds.remote(step["host"], usr, "true")),
    "source_shutdown": lambda cmds, step, usr: show(
        cmds.xen_virsh(step["host"], usr) + ["shutdown", name(step["domain"], "domain name")]
    ),
    "copy_disk": lambda cmds, step, usr: (
        show(cmds.dd(step["host"], usr, step["device"], step.get("block_size", "4M")))
        + " > "
        + shlex.quote(abspath(step["dest"]))
    ),
    "copy_to_local": lambda cmds, step, usr: (
        f"cd {shlex.quote(abspath(step['work_dir']))}/source && "
        + show(cmds.copy_to_local(step["host"], usr, step["domain"]))
    ),
    "convert": _render_convert,
    "rbd_rename": lambda cmds, step, _usr: show(
        cmds.rbd("rename", _image_spec(step, "source"), f"{step['pool']}/{name(step['dest'], 'image')}")
    ),
    "rbd_import": lambda cmds, step, _usr: show(
        cmds.rbd(
            "import",
            "--image-format",
            "2",
            "--dest-pool",
            name(step["pool"], "pool"),
            abspath(step["path"]),
            name(step["image"], "image"),
        )
    ),
    "rbd_remove": lambda cmds, step, _usr: show(cmds.rbd("rm", _image_spec(step))),
    "checksum": lambda cmds, step, _usr: show(cmds.rbd("export", _image_spec(step), "-")) + " | sha256sum",
    "domain_stop": _render_domain("shutdown"),
    "domain_start": _render_domain("start"),
}


# -- the step table ------------------------------------------------------------------


def _step(name_, minion, fun, kwargs, requires=(), revert=None, command=None, **fields):
    """
    One step: ``name, minion, fun, kwargs, requires``; ``revert`` is
    ``(minion, fun, kwargs)`` or ``None``; ``command`` the plan's op;
    ``verify`` ``{field, equals, subject, when}`` checks the result;
    ``revert_when`` ``(fact, value)`` reverts only when preflight found that.
    """
    return {
        "name": name_,
        "minion": minion,
        "fun": fun,
        "kwargs": kwargs,
        "requires": list(requires),
        "revert": revert,
        "command": command,
        "verify": fields.get("verify"),
        "revert_when": fields.get("revert_when"),
    }


def _source(spec):
    return {"host": spec["source_host"], "domain": spec["source_domain"], "user": spec["source_user"]}


def _copy_to_local_steps(spec, conv):
    work, src = spec["work_dir"], _source(spec)
    step = _step(
        "copy-to-local",
        conv,
        "v2v.copy_to_local",
        {**src, "work_dir": work, "timeout": spec["step_timeout"]},
        requires=["prepare-work-dir", "shutdown-source"],
        revert=(conv, "v2v.remove_work_dir", {"work_dir": work, "subdir": "source"}),
        command={"op": "copy_to_local", **src, "work_dir": work},
    )
    return [step], ["copy-to-local"]


def _dd_steps(spec, facts, conv):
    work, src = spec["work_dir"], _source(spec)
    steps, copies = [], []
    for index, disk in enumerate(facts["source_disks"]):
        dest = f"{work}/source/{spec['source_domain']}-disk{index}"
        copies.append(dest)
        steps.append(
            _step(
                f"copy-disk-{index}",
                conv,
                "v2v.copy_disk",
                {
                    "host": src["host"],
                    "device": disk["source"],
                    "dest": dest,
                    "work_dir": work,
                    "user": src["user"],
                    "progress_tag": f"opsalt/v2v/{facts['id']}/progress/disk{index}",
                },
                requires=["prepare-work-dir", "shutdown-source"],
                command={
                    "op": "copy_disk",
                    "host": src["host"],
                    "device": disk["source"],
                    "dest": dest,
                    "user": src["user"],
                },
            )
        )
    steps.append(
        _step(
            "localize-xml",
            conv,
            "v2v.localize_xml",
            {**src, "work_dir": work, "disk_files": copies},
            requires=["prepare-work-dir"],
        )
    )
    return steps, ["localize-xml"] + [f"copy-disk-{i}" for i in range(len(copies))]


def _source_steps(spec, facts, conv):
    work, src = spec["work_dir"], _source(spec)
    steps = [
        _step(
            "prepare-work-dir",
            conv,
            "v2v.prepare_work_dir",
            {"work_dir": work},
            revert=(conv, "v2v.remove_work_dir", {"work_dir": work}),
        ),
        _step(
            "shutdown-source",
            conv,
            "v2v.source_shutdown",
            dict(src),
            revert=(conv, "v2v.source_start", dict(src)),
            command={"op": "source_shutdown", **src},
            revert_when=("source_state", "running"),
        ),
    ]
    if facts["copy_method"] == "copy-to-local":
        copy_steps, convert_needs = _copy_to_local_steps(spec, conv)
    else:
        copy_steps, convert_needs = _dd_steps(spec, facts, conv)
    xml_path = f"{work}/source/{src['domain']}.xml"
    steps += copy_steps
    steps.append(
        _step(
            "convert",
            conv,
            "v2v.convert",
            {
                "xml_path": xml_path,
                "work_dir": work,
                "name": src["domain"],
                "expected_disks": len(facts["source_disks"]),
                "timeout": spec["step_timeout"],
            },
            requires=convert_needs,
            revert=(conv, "v2v.remove_work_dir", {"work_dir": work, "subdir": "converted"}),
            command={"op": "convert", "xml_path": xml_path, "work_dir": work, "name": src["domain"]},
        )
    )
    return steps


def _target_steps(spec, facts, conv, compute):
    # The target is a pre-created instance nobody uses yet: stopping it (and
    # moving its images aside) while the source is copied and converted
    # shortens the critical path; a failure anywhere restores it.
    target, pool, work = spec["target_domain"], spec["pool"], spec["work_dir"]
    steps = [
        _step(
            "stop-target",
            compute,
            "v2v.domain_stop",
            {"domain": target},
            revert=(compute, "v2v.domain_start", {"domain": target}),
            command={"op": "domain_stop", "domain": target},
            revert_when=("target_state", "running"),
        )
    ]
    imports = []
    for index, image in enumerate(facts["target_images"]):
        bak = image + BAK
        path = f"{work}/converted/{converted_name(spec['source_domain'], index)}"
        steps.append(
            _step(
                f"rename-{image}",
                conv,
                "v2v.rbd_rename",
                {"pool": pool, "source": image, "dest": bak},
                requires=["stop-target"],
                revert=(conv, "v2v.rbd_rename", {"pool": pool, "source": bak, "dest": image}),
                command={"op": "rbd_rename", "pool": pool, "source": image, "dest": bak},
            )
        )
        steps.append(
            _step(
                f"import-{image}",
                conv,
                "v2v.rbd_import",
                {"path": path, "pool": pool, "image": image, "timeout": spec["step_timeout"]},
                requires=[f"rename-{image}", "convert"],
                revert=(conv, "v2v.rbd_remove", {"pool": pool, "image": image, "keep_if_missing": bak}),
                command={"op": "rbd_import", "pool": pool, "path": path, "image": image},
            )
        )
        imports.append(f"import-{image}")
    steps.append(
        _step(
            "start-target",
            compute,
            "v2v.domain_start",
            {"domain": target},
            requires=imports,
            revert=(compute, "v2v.domain_stop", {"domain": target, "force": True}),
            command={"op": "domain_start", "domain": target},
            # a guest that dies right after `virsh start` fails the migration
            verify={"field": "after", "equals": "running", "subject": target, "when": "right after start"},
        )
    )
    return steps


def step_table(spec, facts):
    """
    Every step of the migration, from the definition and the facts found by
    preflight (so resume rebuilds the same flow from the journal); see
    :func:`_step` for the fields of each.
    """
    conv, compute = spec["conversion_minion"], spec["compute_minion"]
    return _source_steps(spec, facts, conv) + _target_steps(spec, facts, conv, compute)


def verify_result(step, result):
    """Raise ``CommandExecutionError`` when ``result`` fails the step's ``verify``."""
    verify = step.get("verify")
    if not verify:
        return result
    got = (result or {}).get(verify["field"])
    if got != verify["equals"]:
        raise CommandExecutionError(
            f"{verify['subject']} is '{got}' {verify['when']}, not {verify['equals']}"
        )
    return result


def should_revert(step, facts):
    """Whether the step has a revert that applies to what preflight found."""
    if step.get("revert") is None:
        return False
    when = step.get("revert_when")
    # e.g. bring a domain back up only if it was running before the migration
    return when is None or facts.get(when[0]) == when[1]


# -- preflight ----------------------------------------------------------------------

CONVERSION_TOOLS = ["ssh", "virsh", "virt-v2v", "nbdkit", "rbd", "virt-v2v-copy-to-local"]
_NEEDED_TOOLS = ["ssh", "virsh", "virt-v2v", "nbdkit", "rbd"]
FREE_SPACE_FACTOR = 2  # the source copies plus the converted disks


def probes(spec):
    """
    What preflight asks the minions: ``{answer key: (minion, v2v function,
    args, kwargs)}``, all read-only (``v2v.probe``).
    """
    conv, compute = spec["conversion_minion"], spec["compute_minion"]
    src_host, src_user, domain = spec["source_host"], spec["source_user"], spec["source_domain"]
    return {
        "conversion tools": (conv, "tools", [CONVERSION_TOOLS], {"versions": False}),
        "ssh": (conv, "ssh_check", [src_host], {"user": src_user}),
        "source state": (conv, "source_domain_state", [src_host, domain], {"user": src_user}),
        "source disks": (conv, "source_disks", [src_host, domain], {"user": src_user}),
        "target images": (conv, "instance_images", [spec["pool"], spec["instance_uuid"]], {}),
        "work dir": (conv, "work_dir_state", [spec["work_dir"]], {}),
        "free space": (conv, "free_space", [spec["work_dir"]], {}),
        "compute tools": (compute, "tools", [["virsh"]], {"versions": False}),
        "target state": (compute, "domain_state", [spec["target_domain"]], {}),
    }


def answer(answers, key):
    """The value of one probe answer; its error as ``CommandExecutionError``."""
    found = answers[key]
    if not found["ok"]:
        raise CommandExecutionError(found["error"])
    return found["value"]


# Each check: (spec, answers, facts so far) -> (ok, detail, facts it found).


def check_conversion_tools(spec, answers, _facts):
    found = answer(answers, "conversion tools")
    method = spec["copy_method"]
    if method == "auto":
        method = "copy-to-local" if found["virt-v2v-copy-to-local"]["found"] else "dd"
    needed = _NEEDED_TOOLS + (["virt-v2v-copy-to-local"] if method == "copy-to-local" else [])
    missing = [n for n in needed if not found[n]["found"]]
    facts = {"copy_method": method}
    conv = spec["conversion_minion"]
    if missing:
        return False, f"missing on {conv}: {', '.join(missing)} (set v2v:tools:<name> if elsewhere)", facts
    return True, f"{', '.join(needed)} present on {conv}; copy method {method}", facts


def check_compute_tools(spec, answers, _facts):
    compute = spec["compute_minion"]
    missing = [n for n, entry in answer(answers, "compute tools").items() if not entry["found"]]
    if missing:
        return False, f"missing on {compute}: {', '.join(missing)} (set v2v:tools:<name> if elsewhere)", {}
    return True, f"virsh present on {compute}", {}


def check_ssh(spec, answers, _facts):
    answer(answers, "ssh")
    return True, f"{spec['source_user']}@{spec['source_host']} answers", {}


def check_source_domain(spec, answers, _facts):
    state = answer(answers, "source state")
    facts = {"source_state": state}
    domain = spec["source_domain"]
    if state is None:
        return False, f"{domain} does not exist on {spec['source_host']}", facts
    if state != "shut off" and not spec["shutdown_source"]:
        return False, f"{domain} is {state}; shut it down or set shutdown_source: true", facts
    return True, f"{domain} is {state}", facts


def check_source_disks(spec, answers, _facts):
    disks = answer(answers, "source disks")
    facts = {"source_disks": disks}
    if not disks:
        return False, f"{spec['source_domain']} has no disks", facts
    return True, ", ".join(f"{d['source']} ({d['size']} bytes)" for d in disks), facts


def check_target_domain(spec, answers, _facts):
    state = answer(answers, "target state")
    facts = {"target_state": state}
    if state is None:
        return (
            False,
            f"target domain {spec['target_domain']} does not exist on {spec['compute_minion']}",
            facts,
        )
    return True, f"{spec['target_domain']} is {state}", facts


def check_copy_method(_spec, _answers, facts):
    odd = [d["source"] for d in facts["source_disks"] if d["type"] != "block" or not d["size"]]
    if odd and facts["copy_method"] == "dd":
        return False, f"not LVM/block devices: {', '.join(map(str, odd))}; use copy_method: copy-to-local", {}
    return True, f"{facts['copy_method']} fits the source disks", {}


def _image_mismatch(spec, sources, disks):
    if len(sources) > len(disks):
        return (
            f"the source has {len(sources)} disks but the instance only {len(disks)} images "
            f"({', '.join(d['name'] for d in disks)}); pick a flavor with ephemeral disks"
        )
    for src, dst in zip(sources, disks):
        if src.get("size") and dst["size"] is not None and src["size"] > dst["size"]:
            return f"{src['source']} ({src['size']} bytes) is larger than {dst['name']} ({dst['size']})"
    return None


def check_target_images(spec, answers, facts):
    found = answer(answers, "target images")
    disks = found["disks"]
    leftovers = [n for n in found["other"] if n.endswith(BAK) or n.endswith(IMPORTING_SUFFIX)]
    if leftovers:
        return False, f"left over from an earlier migration: {', '.join(leftovers)}; clean them up first", {}
    if not disks:
        return False, f"no images {spec['pool']}/{spec['instance_uuid']}_disk* found (rbd ls)", {}
    sources = facts["source_disks"] or []
    mismatch = _image_mismatch(spec, sources, disks)
    if mismatch:
        return False, mismatch, {}
    images = [d["name"] for d in disks[: len(sources)]]
    mapping = ", ".join(f"{s['source']} -> {d}" for s, d in zip(sources, images))
    return True, mapping, {"target_images": images}


def check_free_space(spec, answers, facts):
    if answer(answers, "work dir") == "foreign":
        return (
            False,
            f"{spec['work_dir']} exists and holds other files; give the migration a directory of its own",
            {},
        )
    needed = FREE_SPACE_FACTOR * sum(d.get("size") or 0 for d in facts["source_disks"] or [])
    free = answer(answers, "free space")
    if free < needed:
        return (
            False,
            f"{spec['work_dir']} has {free} bytes free, needs {needed} (source copies + conversion)",
            {},
        )
    return True, f"{free} bytes free, {needed} needed", {}


Check = collections.namedtuple("Check", "name run needs")
_DISKS_AND_METHOD = ("source_disks", "copy_method")
# In report order; a check runs once the facts it needs were found.
PREFLIGHT = (
    Check("conversion tools", check_conversion_tools, ()),
    Check("compute tools", check_compute_tools, ()),
    Check("ssh to the Xen host", check_ssh, ()),
    Check("source domain", check_source_domain, ()),
    Check("source disks", check_source_disks, ()),
    Check("target domain", check_target_domain, ()),
    Check("copy method", check_copy_method, _DISKS_AND_METHOD),
    Check("target images", check_target_images, _DISKS_AND_METHOD),
    Check("work_dir and its free space", check_free_space, _DISKS_AND_METHOD),
)


def preflight(spec, answers, mig_id, table=PREFLIGHT):
    """
    Run the checks of ``table`` on the probe ``answers``. Returns ``(ok,
    checks, facts)``: ``checks`` is ``[{check, ok, detail}]``, ``facts``
    what the step table needs (copy method, disks, target images, states).
    """
    facts, checks = {"id": mig_id}, []
    for entry in table:
        if not all(key in facts for key in entry.needs):
            continue
        try:
            ok, detail, found = entry.run(spec, answers, facts)
        except (CommandExecutionError, SaltInvocationError) as err:
            ok, detail, found = False, str(err), {}
        facts.update(found)
        checks.append({"check": entry.name, "ok": bool(ok), "detail": detail})
    return all(c["ok"] for c in checks), checks, facts


# -- waves --------------------------------------------------------------------------

DEFAULT_WAVE_CONCURRENCY = 2


def _id_list(ids):
    if isinstance(ids, str):
        ids = [part.strip() for part in ids.split(",") if part.strip()]
    if not isinstance(ids, (list, tuple)) or not ids:
        raise SaltInvocationError("a wave needs a non-empty list of migration ids")
    return [migration_id({}, mig_id) for mig_id in ids]


def wave_members(wave, ids, v2v_pillar):
    """
    ``(name, ids)`` of a wave: ``ids`` given directly (a list or ``a,b,c``;
    the wave is then named ``wave`` or after its first id), or the list in
    pillar ``v2v:waves:<wave>``. Ids are validated and must be unique.
    """
    if wave is not None:
        wave = migration_id({}, wave)
    if ids is None:
        if wave is None:
            raise SaltInvocationError("give a wave name (pillar v2v:waves:<name>) or ids")
        listed = (v2v_pillar.get("waves") or {}).get(wave)
        if listed is None:
            raise SaltInvocationError(f"no v2v:waves:{wave} in the pillar")
        ids = listed
    members = _id_list(ids)
    doubles = sorted({m for m in members if members.count(m) > 1})
    if doubles:
        raise SaltInvocationError(f"wave lists {', '.join(doubles)} more than once")
    return wave or f"wave-{members[0]}", members


def wave_concurrency(value):
    """The number of migrations a wave runs at once (an integer >= 1)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SaltInvocationError(f"concurrency must be an integer >= 1, not {value!r}")
    return value


def wave_entry(summary, source_disks, seconds):
    """
    One migration's line in a wave: state, wall time, MiB/s of its source
    disks. The rate only for a migration that succeeded: a reverted one (or
    a rollback, or an "already rolled back" that took no time) moved no
    data to show a rate for.
    """
    total = sum(d.get("size") or 0 for d in source_disks or [])
    moved = summary.get("state") == "success" and seconds > 0 and total
    entry = {
        "state": summary.get("state"),
        "result": bool(summary.get("result")),
        "seconds": round(seconds, 2),
        "mib_per_s": round(total / seconds / 2**20, 1) if moved else None,
    }
    for key in ("comment", "errors", "revert_errors"):
        if summary.get(key):
            entry[key] = summary[key]
    return entry


def wave_state(entries, wanted="success"):
    """
    ``wanted`` (``success``, or ``reverted`` for a rollback, where members
    that never started count as undone) when every migration got there;
    ``incomplete`` while some are ``running`` or ``pending`` (the wave runs,
    or its runner died: ``v2v.resume_wave``); ``stopped`` when some never
    started; else ``failed``.
    """
    states = [e["state"] for e in entries.values()]
    fine = (wanted,) if wanted == "success" else (wanted, "not started")
    if all(state in fine for state in states):
        return wanted
    if any(state in ("running", "pending") for state in states):
        return "incomplete"
    return "stopped" if "not started" in states else "failed"


def wave_table(entries):
    """The wave's summary as lines of text, one per migration."""
    lines = [f"{'migration':<28} {'state':<14} {'seconds':>9} {'MiB/s':>8}"]
    for mig_id, entry in entries.items():
        seconds = "-" if entry.get("seconds") is None else f"{entry['seconds']:.1f}"
        rate = "-" if entry.get("mib_per_s") is None else f"{entry['mib_per_s']:.1f}"
        lines.append(f"{mig_id:<28} {entry['state']:<14} {seconds:>9} {rate:>8}")
    return lines
