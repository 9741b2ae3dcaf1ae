"""
Step functions for moving a VM from Xen+LVM to KVM+Ceph RBD with virt-v2v.

Runs on the conversion host (ssh to the Xen host, copy, convert, rbd) and on
the compute node (``virsh`` for the target instance). The ``v2v`` runner
drives these functions; each one validates its arguments, runs argument
lists (never a shell string) and is idempotent, so a resumed migration can
call a step again.

Configuration (minion config or pillar, read with ``config.get``):

.. code-block:: yaml

    v2v:
      tools:                 # paths of the tools, default: the bare name on PATH
        ssh: /usr/bin/ssh
        virsh: /usr/bin/virsh
        virt-v2v: /usr/bin/virt-v2v
        virt-v2v-copy-to-local: /usr/bin/virt-v2v-copy-to-local
        nbdkit: /usr/sbin/nbdkit
        rbd: /usr/bin/rbd
      ceph:
        conf: /etc/ceph/ceph.conf
        keyring: /etc/ceph/ceph.client.nova.keyring
        id: nova
      libvirt_uri: qemu:///system
      ssh_options: [-o, BatchMode=yes, -o, ConnectTimeout=10]
"""

import concurrent.futures
import contextvars
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import time

from salt.exceptions import CommandExecutionError, SaltInvocationError

try:
    import opsalt_cmd
    import opsalt_files
    import opsalt_policy
    import opsalt_v2v
    import opsalt_validate
    import opsalt_wait

    HAS_HELPERS = True
except ImportError as _err:  # pragma: no cover - reported by __virtual__
    HAS_HELPERS = False
    _IMPORT_ERROR = str(_err)

log = logging.getLogger(__name__)

__virtualname__ = "v2v"

CHUNK = 4 * 1024 * 1024
WORK_MARKER = ".opsalt-v2v"
# where the v2v SLS may create the work root unless the operator's policy
# (opsalt:policy:allowed_paths, opsalt:policy:v2v:allowed_paths) allows more
DEFAULT_WORK_ROOT = "/var/lib/opsalt-v2v"


def __virtual__():
    if not HAS_HELPERS:
        return (False, f"v2v needs the opsalt helpers ({_IMPORT_ERROR}); pip install opsalt or sync _utils")
    return __virtualname__


# -- validation (the patterns live in opsalt_v2v, shared with the runner) ----


def _uuid(value):
    return opsalt_v2v.uuid(value)


def _name(value, what):
    return opsalt_v2v.name(value, what)


def _device(value):
    return opsalt_v2v.device(value)


def _abspath(value, what="path"):
    return opsalt_v2v.abspath(value, what)


# -- configuration -------------------------------------------------------------


def _config(key, default=None):
    return __salt__["config.get"](f"v2v:{key}", default)


def _tool(name):
    return _config(f"tools:{name}", name)


def _commands():
    return opsalt_v2v.Commands(
        _tool,
        libvirt_uri=_config("libvirt_uri", "qemu:///system"),
        ssh_options=_config("ssh_options", opsalt_v2v.DEFAULT_SSH_OPTIONS),
        ceph={key: _config(f"ceph:{key}") for key in ("conf", "keyring", "id")},
    )


def _remote(host, user, *command):
    return _commands().remote(host, user, *command)


def _xen_virsh(host, user):
    return _commands().xen_virsh(host, user)


def _compute_virsh():
    return _commands().compute_virsh()


def _rbd_argv(*args):
    return _commands().rbd(*args)


def _run(argv, timeout=600, check=True, env=None, cwd=None):
    return opsalt_cmd.run(argv, timeout=timeout, check=check, env=env, cwd=cwd)


# -- tools and host facts ----------------------------------------------------------


def tools(names=None, versions=True):
    """
    Which migration tools this host has: ``{name: {path, found, version}}``.

    names
        Tool names to check; default every tool the migration uses.
    versions
        ``False``: only whether each tool is there, without running it for
        its version (the runner's preflight needs no more; a wave's
        preflights would otherwise start five processes per VM for it).

    CLI Example:

    .. code-block:: bash

        salt conv01 v2v.tools
        salt compute07 v2v.tools '[virsh, rbd]'
    """
    names = names or ["ssh", "virsh", "virt-v2v", "virt-v2v-copy-to-local", "nbdkit", "rbd"]
    version_args = {
        "virsh": ["--version"],
        "virt-v2v": ["--version"],
        "nbdkit": ["--version"],
        "rbd": ["--version"],
    }

    def look(name):
        path = _tool(name)
        resolved = path if os.path.isabs(path) else __salt__["cmd.which"](path)
        entry = {"path": resolved or path, "found": bool(resolved and os.access(resolved, os.X_OK))}
        if versions and entry["found"] and name in version_args:
            proc = _run([resolved, *version_args[name]], timeout=30, check=False)
            lines = (proc.stdout or proc.stderr or "").strip().splitlines()
            entry["version"] = lines[0] if proc.returncode == 0 and lines else None
        return entry

    return dict(zip(names, _at_once([(look, (name,), {}) for name in names])))


def _at_once(calls, workers=8):
    """
    Run ``[(function, args, kwargs)]`` in threads and return their results in
    order (the first exception is raised once all are done). Each thread runs
    in a copy of this job's context, where Salt's loader keeps ``__salt__``
    and ``__opts__``.
    """
    if len(calls) <= 1:
        return [func(*args, **kwargs) for func, args, kwargs in calls]
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(workers, len(calls))) as pool:
        futures = [
            pool.submit(contextvars.copy_context().run, func, *args, **kwargs) for func, args, kwargs in calls
        ]
    return [future.result() for future in futures]


def free_space(path):
    """
    Bytes free for unprivileged users in the file system holding ``path``
    (the nearest existing parent when ``path`` does not exist yet).

    CLI Example:

    .. code-block:: bash

        salt conv01 v2v.free_space /data/image
    """
    path = _abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def ssh_check(host, user="root"):
    """
    True when passwordless ssh to ``user@host`` works (BatchMode, so a
    password prompt fails instead of hanging).

    CLI Example:

    .. code-block:: bash

        salt conv01 v2v.ssh_check xen01.example.com
    """
    proc = _run(_remote(host, user, "true"), timeout=60, check=False)
    if proc.returncode != 0:
        raise CommandExecutionError(
            f"ssh to {user}@{host} failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}; "
            "the conversion host needs passwordless root ssh to the Xen host (ssh-agent or a key)"
        )
    return True


# -- the source (Xen) side ------------------------------------------------------


def source_domain_state(host, domain, user="root"):
    """
    State of the Xen guest (``running``, ``shut off``, ...) over
    ``xen+ssh``, or ``None`` when the domain does not exist.

    CLI Example:

    .. code-block:: bash

        salt conv01 v2v.source_domain_state xen01 instance-00000017
    """
    return _domstate(_xen_virsh(host, user), domain, timeout=120)


def _domstate(virsh, domain, timeout):
    """
    ``virsh ... domstate DOMAIN``: its state, or ``None`` when the domain
    does not exist.
    """
    argv = virsh + ["domstate", _name(domain, "domain name")]
    proc = _run(argv, timeout=timeout, check=False)
    if proc.returncode != 0:
        if "failed to get domain" in proc.stderr or "Domain not found" in proc.stderr:
            return None
        raise CommandExecutionError(f"'{opsalt_v2v.show(argv)}' failed: {proc.stderr.strip()[-500:]}")
    return proc.stdout.strip()


def source_domain_xml(host, domain, user="root"):
    """
    The Xen guest's libvirt XML (``virsh dumpxml`` over ``xen+ssh``).

    CLI Example:

    .. code-block:: bash

        salt conv01 v2v.source_domain_xml xen01 instance-00000017
    """
    argv = _xen_virsh(host, user) + ["dumpxml", _name(domain, "domain name")]
    return _run(argv, timeout=120).stdout


def _disks_of(xml_text):
    return opsalt_v2v.disks_of(xml_text)


def source_disks(host, domain, user="root"):
    """
    The Xen guest's disks in guest order: ``[{type, source, target, size}]``
    (size from ``blockdev --getsize64`` on the Xen host).

    CLI Example:

    .. code-block:: bash

        salt conv01 v2v.source_disks xen01 instance-00000017
    """
    _root, disks = _disks_of(source_domain_xml(host, domain, user))
    for disk in disks:
        if disk["type"] == "block":
            out = _run(_remote(host, user, "blockdev", "--getsize64", _device(disk["source"])), timeout=60)
            disk["size"] = int(out.stdout.strip())
        else:
            disk["size"] = None
    return disks


def source_shutdown(host, domain, user="root", timeout=300):
    """
    Shut the Xen guest down and wait until it is ``shut off``. Returns
    ``{"before": state, "after": state}``; a guest already off is left alone.

    CLI Example:

    .. code-block:: bash

        salt conv01 v2v.source_shutdown xen01 instance-00000017
    """
    before = source_domain_state(host, domain, user)
    if before is None:
        raise CommandExecutionError(f"source domain {domain} does not exist on {host}")
    if before != "shut off":
        _run(_xen_virsh(host, user) + ["shutdown", domain], timeout=120)
        _wait_state(
            lambda: source_domain_state(host, domain, user), "shut off", timeout, f"{domain} on {host}"
        )
    return {"before": before, "after": "shut off"}


def source_start(host, domain, user="root"):
    """
    Start the Xen guest again (the revert of ``source_shutdown``); a running
    guest is left alone.

    CLI Example:

    .. code-block:: bash

        salt conv01 v2v.source_start xen01 instance-00000017
    """
    state = source_domain_state(host, domain, user)
    if state == "running":
        return {"before": state, "after": state}
    _run(_xen_virsh(host, user) + ["start", domain], timeout=120)
    return {"before": state, "after": source_domain_state(host, domain, user)}


def _wait_state(probe, wanted, timeout, what):
    seen = {}

    def reached():
        seen["state"] = probe()
        return seen["state"] == wanted

    if not opsalt_wait.until(reached, float(timeout), interval=1, max_interval=1):
        raise CommandExecutionError(
            f"{what} is still '{seen['state']}' after {timeout} s (waiting for '{wanted}')"
        )
    return wanted


# -- work directory and copies --------------------------------------------------


def prepare_work_dir(work_dir):
    """
    Create ``work_dir`` (mode 0700) with the marker file that lets
    ``remove_work_dir`` delete it later, and nothing else.

    CLI Example:

    .. code-block:: bash

        salt conv01 v2v.prepare_work_dir /data/v2v/instance-00000017
    """
    work_dir = _abspath(work_dir, "work dir")
    if work_dir_state(work_dir) == "foreign":
        # its revert and cleanup delete the whole work dir: never adopt a
        # directory that holds someone else's files
        raise CommandExecutionError(
            f"{work_dir} exists and holds files v2v did not create; give the migration a directory of its own"
        )
    os.makedirs(work_dir, mode=0o700, exist_ok=True)
    marker = os.path.join(work_dir, WORK_MARKER)
    if not os.path.exists(marker):
        opsalt_files.atomic_write(
            marker, "created by opsalt v2v; removed by v2v.remove_work_dir\n", make_backup=False
        )
    return work_dir


def work_root_verdict(work_root=DEFAULT_WORK_ROOT):
    """
    Whether the v2v SLS may manage ``work_root`` (``v2v:work_root``): an
    absolute, normalised path without control characters, under
    ``/var/lib/opsalt-v2v`` unless the operator's policy in the minion
    configuration (``opsalt:policy:allowed_paths``,
    ``opsalt:policy:v2v:allowed_paths``) allows more. The pillar cannot widen
    that policy. Returns ``{"ok", "path", "comment"}`` and never raises, so
    the SLS reports a refusal as a failing state that names the key.

    CLI Example:

    .. code-block:: bash

        salt conv01 v2v.work_root_verdict /var/lib/opsalt-v2v
    """
    try:
        path = opsalt_validate.abs_path(work_root, "v2v:work_root")
        opsalt_policy.check_path(
            path, "v2v:work_root", "v2v", [DEFAULT_WORK_ROOT], opsalt_policy.read(__salt__)
        )
    except (opsalt_validate.ValidationError, opsalt_policy.PolicyError) as err:
        shown = work_root if isinstance(work_root, str) else ""
        return {"ok": False, "path": shown, "comment": f"nothing managed: {err}"}
    return {"ok": True, "path": path, "comment": f"v2v:work_root {path} is allowed"}


def work_dir_state(work_dir):
    """
    What is at ``work_dir``: ``missing``, ``empty``, ``ours`` (made by
    ``prepare_work_dir``) or ``foreign`` (anything else: not usable).

    CLI Example:

    .. code-block:: bash

        salt conv01 v2v.work_dir_state /data/v2v/instance-00000017
    """
    work_dir = _abspath(work_dir, "work dir")
    if not os.path.lexists(work_dir):
        return "missing"
    if not os.path.isdir(work_dir) or os.path.islink(work_dir):
        return "foreign"
    if os.path.exists(os.path.join(work_dir, WORK_MARKER)):
        return "ours"
    return "empty" if not os.listdir(work_dir) else "foreign"


def _in_work_dir(work_dir, path):
    work_dir = _abspath(work_dir, "work dir")
    path = _abspath(path)
    if not path.startswith(work_dir + "/"):
        raise SaltInvocationError(f"{path} is outside the work dir {work_dir}")
    if not os.path.exists(os.path.join(work_dir, WORK_MARKER)):
        raise CommandExecutionError(
            f"{work_dir} was not prepared by v2v.prepare_work_dir; refusing to write there"
        )
    return path


def _fire_progress(tag, data):
    if not tag:
        return
    try:
        __salt__["event.fire_master"](data, tag)
    except Exception as err:
        # Progress is informative only: a lost event must not fail a copy.
        log.debug("v2v: progress event %s not sent: %s", tag, err)


def copy_disk(
    host, device, dest, work_dir, user="root", block_size="4M", progress_tag=None, progress_interval=5
):
    """
    Copy a block device of the Xen host to ``dest`` with ``dd`` over ssh
    (without ``status=progress``, which CentOS 5's dd lacks; progress is
    counted here and sent as events to ``progress_tag``). The copy goes to
    ``dest.part`` and is renamed when complete, so ``dest`` is never half a
    disk. A complete ``dest`` of the device's size is not copied again.

    CLI Example:

    .. code-block:: bash

        salt conv01 v2v.copy_disk xen01 /dev/vg_xen/vm17-disk0 /data/v2v/vm17/src/vm17-disk0 /data/v2v/vm17
    """
    opsalt_v2v.host(host), opsalt_v2v.user(user)
    device = _device(device)
    dest = _in_work_dir(work_dir, dest)
    if not re.fullmatch(r"[0-9]+[KMG]?", str(block_size)):
        raise SaltInvocationError(f"invalid block_size: {block_size!r}")
    size_proc = _run(_remote(host, user, "blockdev", "--getsize64", device), timeout=60)
    size = int(size_proc.stdout.strip())
    if os.path.exists(dest) and os.path.getsize(dest) == size:
        return {"dest": dest, "bytes": size, "copied": False}
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    part = dest + ".part"
    argv = _commands().dd(host, user, device, block_size)
    started = time.monotonic()
    with open(part, "wb") as out:
        # ssh writes straight into the file: no Python in the data path.
        # Progress is the file's size, sampled while waiting.
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.PIPE)
        try:
            while True:
                try:
                    proc.wait(timeout=float(progress_interval))
                    break
                except subprocess.TimeoutExpired:
                    copied = os.fstat(out.fileno()).st_size
                    _fire_progress(
                        progress_tag,
                        {
                            "device": device,
                            "bytes": copied,
                            "total": size,
                            "percent": round(100.0 * copied / size, 1) if size else 100.0,
                        },
                    )
            stderr = proc.stderr.read().decode(errors="replace")
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            proc.stderr.close()
        out.flush()
        os.fsync(out.fileno())
        copied = os.fstat(out.fileno()).st_size
    if proc.returncode != 0 or copied != size:
        os.unlink(part)
        raise CommandExecutionError(
            f"copy of {device} from {host} failed after {copied} of {size} bytes "
            f"(exit {proc.returncode}): {stderr.strip()[-500:]}"
        )
    os.replace(part, dest)
    _fire_progress(progress_tag, {"device": device, "bytes": copied, "total": size, "percent": 100.0})
    return {"dest": dest, "bytes": copied, "copied": True, "seconds": round(time.monotonic() - started, 3)}


def copy_to_local(host, domain, work_dir, user="root", timeout=86400):
    """
    Copy the guest's disks and XML with ``virt-v2v-copy-to-local`` into
    ``<work_dir>/source`` (virt-v2v 1.x conversion hosts). Returns the local
    XML path and disk files.

    CLI Example:

    .. code-block:: bash

        salt conv01 v2v.copy_to_local xen01 instance-00000017 /data/v2v/instance-00000017
    """
    domain = _name(domain, "domain name")
    source_dir = _in_work_dir(work_dir, os.path.join(_abspath(work_dir), "source"))
    xml_path = os.path.join(source_dir, f"{domain}.xml")
    if os.path.exists(xml_path):
        _root, disks = _disks_of(opsalt_files.read_text(xml_path))
        if all(d["source"] and os.path.exists(d["source"]) for d in disks):
            return {"xml": xml_path, "disks": [d["source"] for d in disks], "copied": False}
    os.makedirs(source_dir, exist_ok=True)
    argv = _commands().copy_to_local(host, user, domain)
    _run(argv, timeout=timeout, cwd=source_dir)
    _root, disks = _disks_of(opsalt_files.read_text(xml_path))
    return {"xml": xml_path, "disks": [d["source"] for d in disks], "copied": True}


def localize_xml(host, domain, work_dir, disk_files, user="root"):
    """
    Save the guest's libvirt XML as ``<work_dir>/source/<domain>.xml`` with
    each ``<disk>`` pointed at its local copy (``disk_files``, in guest
    order), ready for ``virt-v2v -i libvirtxml``.

    CLI Example:

    .. code-block:: bash

        salt conv01 v2v.localize_xml xen01 vm17 /data/v2v/vm17 '[/data/v2v/vm17/source/vm17-disk0]'
    """
    domain = _name(domain, "domain name")
    files = [_in_work_dir(work_dir, f) for f in disk_files]
    root, disks = _disks_of(source_domain_xml(host, domain, user))
    if len(disks) != len(files):
        raise CommandExecutionError(
            f"{domain} has {len(disks)} disks but {len(files)} local copies were given"
        )
    path = _in_work_dir(work_dir, os.path.join(_abspath(work_dir), "source", f"{domain}.xml"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    opsalt_files.atomic_write(path, opsalt_v2v.localized_xml(root, files), mode=0o600, make_backup=False)
    return {"xml": path, "disks": files}


# -- conversion ------------------------------------------------------------------


def converted_disks(work_dir, name):
    """
    The disks virt-v2v wrote for ``name`` in ``<work_dir>/converted``, in
    order (``NAME-sda``, ``NAME-sdb``, ...), with their sizes.

    CLI Example:

    .. code-block:: bash

        salt conv01 v2v.converted_disks /data/v2v/vm17 vm17
    """
    name = _name(name, "domain name")
    out_dir = os.path.join(_abspath(work_dir, "work dir"), "converted")
    if not os.path.isdir(out_dir):
        return []
    pattern = opsalt_v2v.converted_pattern(name)
    found = sorted(
        (f for f in os.listdir(out_dir) if pattern.match(f)),
        key=lambda f: (len(f), f),
    )
    return [
        {"path": os.path.join(out_dir, f), "size": os.path.getsize(os.path.join(out_dir, f))} for f in found
    ]


def convert(xml_path, work_dir, name, expected_disks=None, timeout=86400):
    """
    Convert the guest with ``virt-v2v -i libvirtxml XML -o local -os
    <work_dir>/converted -of raw --machine-readable``; the overlay goes to
    ``<work_dir>/tmp`` (``VIRT_V2V_TMPDIR``). A finished conversion (all
    disks and the XML present, with the completion marker) is not redone.

    CLI Example:

    .. code-block:: bash

        salt conv01 v2v.convert /data/v2v/vm17/source/vm17.xml /data/v2v/vm17 vm17
    """
    name = _name(name, "domain name")
    xml_path = _in_work_dir(work_dir, xml_path)
    work_dir = _abspath(work_dir, "work dir")
    out_dir = _in_work_dir(work_dir, os.path.join(work_dir, "converted"))
    done_marker = os.path.join(out_dir, f".{name}.converted")
    if os.path.exists(done_marker):
        disks = converted_disks(work_dir, name)
        if disks and (expected_disks is None or len(disks) == int(expected_disks)):
            return {"disks": disks, "converted": False}
    tmp_dir = os.path.join(work_dir, "tmp")
    os.makedirs(out_dir, exist_ok=True)
    os.makedirs(tmp_dir, exist_ok=True)
    argv = _commands().convert(xml_path, out_dir, name)
    env = {"VIRT_V2V_TMPDIR": tmp_dir, "LIBGUESTFS_BACKEND": "direct"}
    nbdkit = _tool("nbdkit")
    if os.path.isabs(nbdkit):
        # virt-v2v finds nbdkit on PATH
        env["PATH"] = os.path.dirname(nbdkit) + os.pathsep + os.environ.get("PATH", "")
    _run(argv, timeout=timeout, env=env)
    disks = converted_disks(work_dir, name)
    if not disks or (expected_disks is not None and len(disks) != int(expected_disks)):
        raise CommandExecutionError(
            f"virt-v2v finished but wrote {len(disks)} disks for {name} in {out_dir}"
            + (f" (expected {expected_disks})" if expected_disks is not None else "")
        )
    opsalt_files.atomic_write(done_marker, "ok\n", make_backup=False)
    return {"disks": disks, "converted": True}


def remove_work_dir(work_dir, subdir=None):
    """
    Delete the local copies under ``work_dir`` (only a directory made by
    ``prepare_work_dir``). ``subdir`` (``source``, ``converted``, ``tmp``)
    limits it to that part; without it the whole work dir goes.

    CLI Example:

    .. code-block:: bash

        salt conv01 v2v.remove_work_dir /data/v2v/vm17 subdir=source
    """
    work_dir = _abspath(work_dir, "work dir")
    if not os.path.isdir(work_dir):
        return {"removed": False}
    if not os.path.exists(os.path.join(work_dir, WORK_MARKER)):
        raise CommandExecutionError(
            f"{work_dir} has no {WORK_MARKER} marker; not removing a directory v2v did not create"
        )
    if subdir is not None:
        if subdir not in ("source", "converted", "tmp"):
            raise SaltInvocationError(f"invalid subdir {subdir!r}: use source, converted or tmp")
        target = os.path.join(work_dir, subdir)
        existed = os.path.exists(target)
        shutil.rmtree(target, ignore_errors=True)
        return {"removed": existed}
    shutil.rmtree(work_dir)
    return {"removed": True}


# -- RBD ---------------------------------------------------------------------


def _rbd(*args, timeout=600, check=True):
    return _run(_rbd_argv(*args), timeout=timeout, check=check)


def _rbd_error(proc, what):
    message = (proc.stderr or "").strip().splitlines()
    first = message[0] if message else f"exit {proc.returncode}"
    return CommandExecutionError(f"rbd {what} failed (exit {proc.returncode}): {first}")


def rbd_list(pool="rbd", prefix=None):
    """
    Image names in ``pool`` (``rbd ls``), optionally only those starting with
    ``prefix``.

    CLI Example:

    .. code-block:: bash

        salt conv01 v2v.rbd_list vms prefix=5f1b7f3e-6d7c-4b4a-9a3e-2f8f0c1d2e3f_
    """
    pool = _name(pool, "pool name")
    proc = _rbd("ls", "--format", "json", "-p", pool, timeout=120, check=False)
    if proc.returncode != 0:
        raise _rbd_error(proc, f"ls -p {pool}")
    names = json.loads(proc.stdout or "[]")
    return sorted(n for n in names if prefix is None or n.startswith(prefix))


def rbd_info(pool, image):
    """
    ``rbd info`` of ``pool/image`` as a dict, or ``None`` when it does not
    exist.

    CLI Example:

    .. code-block:: bash

        salt conv01 v2v.rbd_info vms 5f1b7f3e-6d7c-4b4a-9a3e-2f8f0c1d2e3f_disk
    """
    return _rbd_json("info", pool, image)


def _rbd_json(subcommand, pool, image):
    """
    ``rbd <subcommand> --format json pool/image`` parsed; ``None`` when the
    image does not exist (rbd exits with ENOENT, 2).
    """
    spec = f"{_name(pool, 'pool name')}/{_name(image, 'image name')}"
    proc = _rbd(subcommand, "--format", "json", spec, timeout=120, check=False)
    if proc.returncode == 2:
        return None
    if proc.returncode != 0:
        raise _rbd_error(proc, f"{subcommand} {spec}")
    return json.loads(proc.stdout)


def _nova_sort_key(suffix):
    return opsalt_v2v.nova_sort_key(suffix)


def instance_images(pool, instance_uuid):
    """
    The instance's Nova RBD images in guest order (``disk``, ``disk.local``,
    ``disk.eph0``, ``disk.eph1``, ...; ``disk.swap`` and ``.bak``/config
    images are listed separately): ``{"disks": [{name, size}], "other": [...]}``.

    CLI Example:

    .. code-block:: bash

        salt conv01 v2v.instance_images vms 5f1b7f3e-6d7c-4b4a-9a3e-2f8f0c1d2e3f
    """
    instance_uuid = _uuid(instance_uuid)
    prefix = f"{instance_uuid}_"
    disks, other = [], []
    for name in rbd_list(pool, prefix=prefix):
        suffix = name[len(prefix) :]
        if opsalt_v2v.is_nova_disk(suffix):
            info = rbd_info(pool, name)
            disks.append({"name": name, "size": info["size"] if info else None})
        else:
            other.append(name)
    disks.sort(key=lambda d: _nova_sort_key(d["name"][len(prefix) :]))
    return {"disks": disks, "other": other}


def rbd_status(pool, image):
    """
    Watchers of ``pool/image`` (``rbd status``): a list of client addresses,
    empty when nothing has the image open. ``None`` when it does not exist.

    CLI Example:

    .. code-block:: bash

        salt conv01 v2v.rbd_status vms 5f1b7f3e-6d7c-4b4a-9a3e-2f8f0c1d2e3f_disk
    """
    status = _rbd_json("status", pool, image)
    if status is None:
        return None
    return [w.get("address") for w in status.get("watchers", [])]


def _refuse_if_open(pool, image, action):
    watchers = rbd_status(pool, image)
    if watchers:
        raise CommandExecutionError(
            f"{pool}/{image} is open by {', '.join(map(str, watchers))}; stop the instance using it before "
            f"the {action}"
        )
    return watchers


def rbd_rename(pool, source, dest):
    """
    Rename ``pool/source`` to ``pool/dest`` (same pool: rbd cannot rename
    across pools). Refuses while the image has watchers. Already renamed
    (source missing, dest present) is success without changes.

    CLI Example:

    .. code-block:: bash

        salt conv01 v2v.rbd_rename vms UUID_disk UUID_disk.bak
    """
    pool, source, dest = _name(pool, "pool name"), _name(source, "image name"), _name(dest, "image name")
    watchers = rbd_status(pool, source)
    if watchers is None:
        if rbd_info(pool, dest) is not None:
            return {"renamed": False, "comment": f"{pool}/{source} is already {pool}/{dest}"}
        raise CommandExecutionError(f"{pool}/{source} does not exist (and neither does {pool}/{dest})")
    if watchers:
        raise CommandExecutionError(
            f"{pool}/{source} is open by {', '.join(map(str, watchers))}; stop the instance using it before "
            "the rename"
        )
    proc = _rbd("rename", f"{pool}/{source}", f"{pool}/{dest}", timeout=120, check=False)
    if proc.returncode == 17:
        raise CommandExecutionError(f"cannot rename {pool}/{source}: {pool}/{dest} already exists")
    if proc.returncode != 0:
        raise _rbd_error(proc, f"rename {pool}/{source} {pool}/{dest}")
    return {"renamed": True}


def rbd_import(path, pool, image, timeout=86400):
    """
    Import a raw disk file as ``pool/image`` (format 2). The data goes to
    ``image.v2v-importing`` first and is renamed when complete, so the final
    name never holds half a disk; an existing image of that name is an error
    (rbd's errno 17), never overwritten.

    CLI Example:

    .. code-block:: bash

        salt conv01 v2v.rbd_import /data/v2v/vm17/converted/vm17-sda vms UUID_disk
    """
    path = _abspath(path)
    pool, image = _name(pool, "pool name"), _name(image, "image name")
    if not os.path.isfile(path):
        raise CommandExecutionError(f"{path} does not exist; convert the guest first")
    staging = image + opsalt_v2v.IMPORTING_SUFFIX
    existing = set(rbd_list(pool, prefix=image))  # one rbd call for both names
    if image in existing:
        raise CommandExecutionError(f"{pool}/{image} already exists; refusing to overwrite it")
    if staging in existing:
        # left by an interrupted import: its content is incomplete
        _rbd_remove_checked(pool, staging)
    proc = _rbd(
        "import", "--image-format", "2", "--dest-pool", pool, path, staging, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise _rbd_error(proc, f"import {path} {pool}/{staging}")
    proc = _rbd("rename", f"{pool}/{staging}", f"{pool}/{image}", timeout=120, check=False)
    if proc.returncode != 0:
        raise _rbd_error(proc, f"rename {pool}/{staging} {pool}/{image}")
    return {"imported": True, "image": f"{pool}/{image}", "bytes": os.path.getsize(path)}


def _rbd_remove_checked(pool, image):
    _refuse_if_open(pool, image, "removal")
    proc = _rbd("rm", "--no-progress", f"{pool}/{image}", timeout=3600, check=False)
    if proc.returncode not in (0, 2):
        raise _rbd_error(proc, f"rm {pool}/{image}")
    return proc.returncode == 0


def rbd_remove(pool, image, keep_if_missing=None):
    """
    Remove ``pool/image``; refuses while it has watchers. A missing image is
    success (``removed: False``). With ``keep_if_missing=<other image>`` the
    image is removed only while that other image exists: the migration
    removes an imported disk only when the original's ``.bak`` is there.

    CLI Example:

    .. code-block:: bash

        salt conv01 v2v.rbd_remove vms UUID_disk keep_if_missing=UUID_disk.bak
    """
    pool, image = _name(pool, "pool name"), _name(image, "image name")
    if keep_if_missing is not None and rbd_info(pool, _name(keep_if_missing, "image name")) is None:
        raise CommandExecutionError(
            f"not removing {pool}/{image}: {pool}/{keep_if_missing} is missing, so {image} may be the original"
        )
    existing = set(rbd_list(pool, prefix=image))
    removed = image in existing and _rbd_remove_checked(pool, image)
    staging_removed = False
    if image + opsalt_v2v.IMPORTING_SUFFIX in existing:
        staging_removed = _rbd_remove_checked(pool, image + opsalt_v2v.IMPORTING_SUFFIX)
    return {"removed": bool(removed), "staging_removed": staging_removed}


def checksum(pool=None, image=None, path=None, algorithm="sha256"):
    """
    Hash of an RBD image (``rbd export pool/image -`` streamed into the
    hash) or of a local file.

    CLI Example:

    .. code-block:: bash

        salt conv01 v2v.checksum pool=vms image=UUID_disk
        salt conv01 v2v.checksum path=/data/v2v/vm17/converted/vm17-sda
    """
    if algorithm not in ("sha256", "sha1", "md5", "sha512"):
        raise SaltInvocationError(f"unsupported algorithm {algorithm!r}")
    digest = hashlib.new(algorithm)
    if path is not None:
        with open(_abspath(path), "rb") as handle:
            for chunk in iter(lambda: handle.read(CHUNK), b""):
                digest.update(chunk)
        return digest.hexdigest()
    if not pool or not image:
        raise SaltInvocationError("give pool and image, or path")
    spec = f"{_name(pool, 'pool name')}/{_name(image, 'image name')}"
    argv = _rbd_argv("export", "--no-progress", spec, "-")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for chunk in iter(lambda: proc.stdout.read(CHUNK), b""):
            digest.update(chunk)
        stderr = proc.stderr.read().decode(errors="replace")
        proc.wait(600)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    if proc.returncode != 0:
        raise CommandExecutionError(
            f"rbd export {spec} failed (exit {proc.returncode}): {stderr.strip()[-300:]}"
        )
    return digest.hexdigest()


# -- the compute node ----------------------------------------------------------------


def domain_state(domain):
    """
    State of a domain on this compute node (``virsh domstate``), or ``None``
    when it does not exist.

    CLI Example:

    .. code-block:: bash

        salt compute07 v2v.domain_state instance-000007a2
    """
    return _domstate(_compute_virsh(), domain, timeout=60)


def _existing_domain_state(domain):
    state = domain_state(domain)
    if state is None:
        raise CommandExecutionError(f"domain {domain} does not exist on this compute node")
    return state


def domain_stop(domain, timeout=120, force=False):
    """
    Shut the domain down (``virsh shutdown``, or ``destroy`` with ``force``)
    and wait until it is ``shut off``. Returns ``{"before", "after"}``.

    CLI Example:

    .. code-block:: bash

        salt compute07 v2v.domain_stop instance-000007a2
    """
    before = _existing_domain_state(domain)
    if before != "shut off":
        _run(_compute_virsh() + ["destroy" if force else "shutdown", domain], timeout=120)
        _wait_state(lambda: domain_state(domain), "shut off", timeout, domain)
    return {"before": before, "after": "shut off"}


def domain_start(domain):
    """
    Start the domain (``virsh start``); a running domain is left alone.

    CLI Example:

    .. code-block:: bash

        salt compute07 v2v.domain_start instance-000007a2
    """
    before = _existing_domain_state(domain)
    if before != "running":
        _run(_compute_virsh() + ["start", domain], timeout=120)
    return {"before": before, "after": domain_state(domain)}


# -- several read-only calls in one job ----------------------------------------------

# The functions ``probe`` may run: they only look, never change anything.
PROBES = (
    "tools",
    "free_space",
    "ssh_check",
    "source_domain_state",
    "source_disks",
    "work_dir_state",
    "instance_images",
    "rbd_list",
    "rbd_info",
    "rbd_status",
    "domain_state",
)


def probe(calls):
    """
    Run several read-only v2v functions at once, in one job (the runner's
    preflight asks each minion everything in one round trip). ``calls`` is
    ``[{"fun": name, "args": [...], "kwargs": {...}}]`` with ``fun`` one of
    ``tools``, ``free_space``, ``ssh_check``, ``source_domain_state``,
    ``source_disks``, ``work_dir_state``, ``instance_images``, ``rbd_list``,
    ``rbd_info``, ``rbd_status``, ``domain_state``. Returns one entry per
    call, in order: ``{"ok": true, "value": ...}`` or ``{"ok": false,
    "error": "..."}``; one failing call does not fail the others.

    CLI Example:

    .. code-block:: bash

        salt conv01 v2v.probe '[{fun: ssh_check, args: [xen01]}, {fun: free_space, args: [/data/v2v]}]'
    """
    if not isinstance(calls, list) or not all(isinstance(c, dict) for c in calls):
        raise SaltInvocationError("calls must be a list of {fun, args, kwargs} mappings")
    planned = []
    for call in calls:
        fun = call.get("fun")
        if fun not in PROBES:
            raise SaltInvocationError(
                f"v2v.probe runs only read-only functions ({', '.join(PROBES)}), not {fun!r}"
            )
        args, kwargs = call.get("args") or [], call.get("kwargs") or {}
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            raise SaltInvocationError(f"{fun}: args must be a list and kwargs a mapping")
        planned.append((_probe_one, (globals()[fun], args, kwargs), {}))
    return _at_once(planned)


def _probe_one(func, args, kwargs):
    try:
        return {"ok": True, "value": func(*args, **kwargs)}
    except (CommandExecutionError, SaltInvocationError) as err:
        return {"ok": False, "error": str(err)}
    except Exception as err:
        # one probe's surprise must not hide the others' answers
        return {"ok": False, "error": f"{type(err).__name__}: {err}"}


# -- commands, for plans ----------------------------------------------------------


def commands(steps):
    """
    The exact command lines a list of steps would run on this host, without
    running them: ``steps`` is ``[{"op": ..., **arguments}]`` with ``op`` one
    of ``ssh_check``, ``source_shutdown``, ``copy_disk``, ``copy_to_local``,
    ``convert``, ``rbd_rename``, ``rbd_import``, ``rbd_remove``,
    ``domain_stop``, ``domain_start``, ``checksum``.

    CLI Example:

    .. code-block:: bash

        salt conv01 v2v.commands '[{op: rbd_rename, pool: vms, source: a_disk, dest: a_disk.bak}]'
    """
    cmds = _commands()
    return [cmds.render(step) for step in steps]
