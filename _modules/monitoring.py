"""
Monitoring for the incidents opsalt exists for: opsalt's alert rules for
Prometheus (rendered from validated pillar thresholds, checked with
``promtool check rules`` before Prometheus reloads them, put back when the
check fails), the exporters' settings, and opsalt's own metrics written
atomically for node_exporter's textfile collector.

Settings come from the ``monitoring`` key (pillar or minion config, read with
``config.get``); paths are checked against the operator policy
(``opsalt:policy:monitoring:allowed_paths``, docs/security.rst).
"""

import json
import os
import re
import shutil
import time
import urllib.error
import urllib.request

from salt.exceptions import CommandExecutionError, SaltInvocationError

try:
    import opsalt_cmd
    import opsalt_files
    import opsalt_monitoring
    import opsalt_policy
    import opsalt_validate

    HAS_HELPERS = True
except ImportError as _err:  # pragma: no cover - reported by __virtual__
    HAS_HELPERS = False
    _IMPORT_ERROR = str(_err)

__virtualname__ = "monitoring"

DEFAULT_RULES_PATH = "/etc/prometheus/rules/opsalt.rules.yml"
DEFAULT_TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"
DEFAULT_TEXTFILE = "opsalt_host.prom"
# Where monitoring may write without an operator policy saying more.
DEFAULT_ROOTS = ("/etc/prometheus", "/var/lib/prometheus", "/etc/default")
# Prometheus's reload endpoint (needs --web.enable-lifecycle); loopback only.
RELOAD_URL_PATTERN = r"^http://(127\.0\.0\.1|localhost|\[::1\]):[0-9]{1,5}/-/reload$"
HTTP_TIMEOUT = 10


def __virtual__():
    if not HAS_HELPERS:
        return (
            False,
            f"monitoring needs the opsalt helpers ({_IMPORT_ERROR}); pip install opsalt or saltutil.sync_all",
        )
    return __virtualname__


# -- plumbing ---------------------------------------------------------------


def _settings():
    value = __salt__["config.get"]("monitoring", {})
    return value if isinstance(value, dict) else {}


def _section(name):
    value = _settings().get(name) or {}
    if not isinstance(value, dict):
        raise SaltInvocationError(f"monitoring:{name} must be a mapping")
    return value


def _allowed_path(path, what):
    try:
        path = opsalt_validate.abs_path(path, what)
        return opsalt_policy.check_path(path, what, "monitoring", DEFAULT_ROOTS, opsalt_policy.read(__salt__))
    except (opsalt_validate.ValidationError, opsalt_policy.PolicyError) as err:
        raise SaltInvocationError(str(err)) from err


def _promtool():
    path = shutil.which("promtool")
    if not path:
        raise CommandExecutionError("promtool is not installed: apt-get install prometheus")
    return path


def _rules_path(path=None):
    return _allowed_path(path or _section("rules").get("path") or DEFAULT_RULES_PATH, "monitoring:rules:path")


def _reload_url(url=None):
    url = url if url is not None else _section("rules").get("reload_url")
    if url in (None, ""):
        return None
    if not isinstance(url, str) or not re.fullmatch(RELOAD_URL_PATTERN, url):
        raise SaltInvocationError(
            f"monitoring:rules:reload_url: {url!r} must be a loopback Prometheus reload URL "
            "like http://127.0.0.1:9090/-/reload"
        )
    return url


# -- alert rules ------------------------------------------------------------


def rules(thresholds=None, durations=None, severities=None):
    """
    The opsalt alert rules (Prometheus rules YAML) rendered from
    ``thresholds``, ``durations`` (per alert ``for``) and ``severities``, each
    defaulting to ``monitoring:rules:thresholds`` / ``for`` / ``severity``.
    With no pillar values this is exactly ``prometheus/opsalt.rules.yml``.

    CLI Example:

    .. code-block:: bash

        salt-call monitoring.rules thresholds='{"load_per_cpu": 0.8}'
    """
    section = _section("rules")
    try:
        return opsalt_monitoring.render_rules(
            thresholds if thresholds is not None else section.get("thresholds"),
            durations if durations is not None else section.get("for"),
            severities if severities is not None else section.get("severity"),
        )
    except opsalt_monitoring.MonitoringError as err:
        raise SaltInvocationError(str(err)) from err


def check_rules(path):
    """
    Run ``promtool check rules`` on ``path``. Returns ``{"valid": bool,
    "output": text}``.

    CLI Example:

    .. code-block:: bash

        salt-call monitoring.check_rules /etc/prometheus/rules/opsalt.rules.yml
    """
    done = opsalt_cmd.run([_promtool(), "check", "rules", path], timeout=60, check=False)
    return {"valid": done.returncode == 0, "output": (done.stdout + done.stderr).strip()}


def plan_rules(path=None, text=None):
    """
    What :func:`apply_rules` would do: the rules file ``path`` (default
    ``monitoring:rules:path``) and its wanted ``text`` (default
    :func:`rules`). Returns ``path``, ``changed``, ``diff`` and
    ``reload_url``.

    CLI Example:

    .. code-block:: bash

        salt-call monitoring.plan_rules
    """
    path = _rules_path(path)
    wanted = rules() if text is None else text
    current = opsalt_files.read_text(path)
    return {
        "path": path,
        "changed": current != wanted,
        "diff": opsalt_files.unified_diff(current, wanted, path) if current != wanted else "",
        "reload_url": _reload_url(),
    }


def _put_back(path, backup_path):
    if backup_path:
        opsalt_files.restore(backup_path, path)
    else:
        os.unlink(path)


def reload_prometheus(url=None):
    """
    Ask Prometheus to reload its configuration and rules (``POST`` to
    ``url``, default ``monitoring:rules:reload_url``; Prometheus must run
    with ``--web.enable-lifecycle``). Returns the URL.

    CLI Example:

    .. code-block:: bash

        salt-call monitoring.reload_prometheus http://127.0.0.1:9090/-/reload
    """
    url = _reload_url(url)
    if url is None:
        raise SaltInvocationError("no Prometheus reload URL: set monitoring:rules:reload_url")
    request = urllib.request.Request(url, data=b"", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:
            response.read()
    except (urllib.error.URLError, OSError) as err:
        raise CommandExecutionError(
            f"Prometheus did not reload at {url} ({err}); is it running with --web.enable-lifecycle?"
        ) from err
    return url


def apply_rules(path=None, text=None):
    """
    Write the rules file ``path`` (default ``monitoring:rules:path``) with
    ``text`` (default :func:`rules`), keeping a backup; check it with
    ``promtool check rules``; when the check fails put the old file back
    (remove the new one when there was none) and raise, leaving Prometheus
    untouched; else reload Prometheus when ``monitoring:rules:reload_url``
    is set. Returns ``path``, ``backup``, ``reloaded``.

    CLI Example:

    .. code-block:: bash

        salt-call monitoring.apply_rules
    """
    plan = plan_rules(path, text)
    path = plan["path"]
    wanted = rules() if text is None else text
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    backup_path = opsalt_files.atomic_write(
        path, wanted, mode=0o644, keep_backups=opsalt_files.backup_keep(__salt__)
    )
    checked = check_rules(path)
    if not checked["valid"]:
        _put_back(path, backup_path)
        raise CommandExecutionError(
            f"promtool check rules refused the new {path}; the old file is back and Prometheus was "
            f"not reloaded: {checked['output'][-1500:]}"
        )
    reloaded = None
    if plan["reload_url"]:
        reloaded = reload_prometheus(plan["reload_url"])
    return {"path": path, "backup": backup_path, "reloaded": reloaded}


def loaded_alerts(url):
    """
    The alert names a running Prometheus has loaded, read from
    ``<url>/api/v1/rules`` (``url`` like ``http://127.0.0.1:9090``).

    CLI Example:

    .. code-block:: bash

        salt-call monitoring.loaded_alerts http://127.0.0.1:9090
    """
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/api/v1/rules", timeout=HTTP_TIMEOUT) as response:
            data = json.load(response)
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise CommandExecutionError(f"cannot read the rules of Prometheus at {url}: {err}") from err
    return sorted(
        rule["name"]
        for group in data.get("data", {}).get("groups", [])
        for rule in group.get("rules", [])
        if rule.get("type") == "alerting"
    )


# -- pillar metrics on the master -------------------------------------------


def _store_dir(cache_dir=None):
    # The store the master's ext_pillar records into (opsalt_ops_http_json), the one
    # the ``master`` collector reads.
    return cache_dir or opsalt_monitoring.pillar_store_dir(_master_cachedir())


def record_fetch(result, duration, minion_id=None, cache_dir=None):
    """
    Count one asset-pillar fetch that ended with ``result`` (``ok``,
    ``not_modified``, ``stale``, ``error`` or ``missing``) after
    ``duration`` seconds, in the store every master process shares
    (``cache_dir``, default the store under
    ``monitoring:textfile:master_cachedir``). The ``ops_http_json``
    ext_pillar records every fetch it serves by itself; this is for a test
    or a hand-made correction.

    CLI Example:

    .. code-block:: bash

        salt-call monitoring.record_fetch ok 0.05 minion_id=web01
    """
    try:
        opsalt_monitoring.PillarMetricsStore(_store_dir(cache_dir)).record(result, duration, minion_id)
    except opsalt_monitoring.MonitoringError as err:
        raise SaltInvocationError(str(err)) from err
    return True


def pillar_metrics(cache_dir=None):
    """
    The ``opsalt_pillar_*`` metrics (Prometheus text) from the store
    (``cache_dir``, default the one under ``monitoring:textfile:master_cachedir``).

    CLI Example:

    .. code-block:: bash

        salt-call monitoring.pillar_metrics
    """
    data = opsalt_monitoring.PillarMetricsStore(_store_dir(cache_dir)).snapshot()
    return opsalt_monitoring.format_metrics(opsalt_monitoring.pillar_families(data))


# -- host metrics ------------------------------------------------------------


def _vmtune_families():
    if "vmtune.gaps" not in __salt__:
        return []
    gaps = __salt__["vmtune.gaps"]()
    families = [
        (
            "opsalt_vmtune_watermark_gap_kib",
            "gauge",
            "min-to-low watermark gap of each primary zone (vmtune.gaps)",
            [
                ({"node": str(zone["node"]), "zone": zone["zone"]}, zone["min_to_low_kib"])
                for zone in gaps["zones"]
                if zone["primary"]
            ],
        )
    ]
    current = __salt__["vmtune.current"]().get("live", {}).get("vm.min_free_kbytes")
    samples = [] if current is None else [({"kind": "current"}, current)]
    burst = __salt__["config.get"]("vmtune:burst_kb")
    if isinstance(burst, int) and not isinstance(burst, bool) and burst > 0:
        recommended = __salt__["vmtune.recommend"](burst)
        samples.append(({"kind": "recommended"}, recommended["min_free_kbytes"]))
        families.append(
            (
                "opsalt_vmtune_burst_kib",
                "gauge",
                "configured allocation burst (vmtune:burst_kb)",
                [({}, burst)],
            )
        )
    families.append(
        ("opsalt_vmtune_min_free_kbytes", "gauge", "vm.min_free_kbytes now and recommended", samples)
    )
    return families


REDIS_CONN_KEYS = ("unix_socket_path", "username", "password", "ssl")


def _redis_families():
    instances = (
        (__salt__["config.get"]("redis_aof:instances") or {}) if "redis_aof.status" in __salt__ else {}
    )
    samples = []
    for name, instance in sorted(instances.items()):
        opsalt_validate.name(name, f"redis_aof:instances:{name}")
        address = (
            instance.get("instance")
            or f"{instance.get('host') or '127.0.0.1'}:{instance.get('port') or 6379}"
        )
        conn = {key: instance[key] for key in REDIS_CONN_KEYS if instance.get(key) is not None}
        persistence = __salt__["redis_aof.status"](instance=address, **conn)["persistence"]
        samples.append(({"redis_instance": name}, int(persistence.get("aof_delayed_fsync") or 0)))
    return [
        (
            "opsalt_redis_aof_fsync_stalls_total",
            "counter",
            "Redis AOF fsyncs delayed (INFO persistence aof_delayed_fsync) per redis_aof instance",
            samples,
        )
    ]


def _pgbouncer_families():
    if "pgbouncer.health" not in __salt__ or not __salt__["config.get"]("pgbouncer:admin"):
        return []
    pools = __salt__["pgbouncer.health"]()["pools"]
    waiting, maxwait = [], []
    for pool in pools:
        database, _, user = pool["pool"].partition("/")
        labels = {"pgbouncer": "main", "database": database, "user": user}
        waiting.append((labels, pool["cl_waiting"]))
        maxwait.append((labels, pool["maxwait"]))
    return [
        (
            "opsalt_pgbouncer_clients_waiting",
            "gauge",
            "clients waiting for a server (pgbouncer.health)",
            waiting,
        ),
        (
            "opsalt_pgbouncer_maxwait_seconds",
            "gauge",
            "longest wait of a waiting client (pgbouncer.health)",
            maxwait,
        ),
    ]


DEFAULT_MASTER_CACHEDIR = "/var/cache/salt/master"


def _master_cachedir():
    given = _section("textfile").get("master_cachedir") or DEFAULT_MASTER_CACHEDIR
    try:
        return opsalt_validate.abs_path(given, "monitoring:textfile:master_cachedir")
    except opsalt_validate.ValidationError as err:
        raise SaltInvocationError(str(err)) from err


def _read_journals(directory):
    journals = []
    for name in sorted(os.listdir(directory)) if os.path.isdir(directory) else []:
        if name.endswith(".json"):
            text = opsalt_files.read_text(os.path.join(directory, name))
            if text:
                journals.append(json.loads(text))
    return journals


def _master_families():
    """The master's pillar fetch metrics and the v2v runner's migrations."""
    cachedir = _master_cachedir()
    if not os.path.isdir(cachedir):
        return []  # not a master
    store = opsalt_monitoring.PillarMetricsStore(opsalt_monitoring.pillar_store_dir(cachedir))
    families = opsalt_monitoring.pillar_families(store.snapshot())
    families.extend(opsalt_monitoring.v2v_families(_read_journals(os.path.join(cachedir, "opsalt", "v2v"))))
    return families


COLLECTORS = {
    "vmtune": _vmtune_families,
    "redis_aof": _redis_families,
    "pgbouncer": _pgbouncer_families,
    "master": _master_families,
}


def textfile_metrics(collectors=None):
    """
    opsalt's host metrics as Prometheus text: ``vmtune`` (watermark gaps,
    min_free_kbytes), ``redis_aof`` (fsync stalls per instance),
    ``pgbouncer`` (pool waits), ``master`` (the master's pillar fetches and
    v2v migrations, read from ``monitoring:textfile:master_cachedir``,
    default ``/var/cache/salt/master``; nothing on a host without it). ``collectors`` is a list of those names
    (default ``monitoring:textfile:collectors`` or all). A collector that
    fails is reported in ``opsalt_monitoring_collector_up`` and does not stop
    the others.

    CLI Example:

    .. code-block:: bash

        salt-call monitoring.textfile_metrics collectors='[vmtune]'
    """
    names = collectors or _section("textfile").get("collectors") or sorted(COLLECTORS)
    families, up = [], []
    for name in names:
        if name not in COLLECTORS:
            raise SaltInvocationError(
                f"monitoring:textfile:collectors: unknown {name!r}; known: {', '.join(COLLECTORS)}"
            )
        try:
            families.extend(COLLECTORS[name]())
            up.append(({"collector": name}, 1))
        except (CommandExecutionError, SaltInvocationError, ValueError, KeyError) as err:
            log_error = f"{type(err).__name__}: {err}"
            up.append(({"collector": name, "error": log_error[:200]}, 0))
    families.append(("opsalt_monitoring_collector_up", "gauge", "1 when the collector read its source", up))
    families.append(
        (
            "opsalt_monitoring_textfile_timestamp_seconds",
            "gauge",
            "when opsalt wrote this file",
            [({}, time.time())],
        )
    )
    return opsalt_monitoring.format_metrics(families)


def write_textfile(directory=None, filename=None, text=None, collectors=None):
    """
    Write opsalt's metrics atomically (temp file, rename) into node_exporter's
    textfile directory (default ``monitoring:textfile:directory``). ``text``
    defaults to :func:`textfile_metrics`. This is what the Salt schedule of
    the ``monitoring`` SLS calls. Returns the path.

    CLI Example:

    .. code-block:: bash

        salt-call monitoring.write_textfile
    """
    section = _section("textfile")
    directory = textfile_directory(directory)
    filename = filename or section.get("filename") or DEFAULT_TEXTFILE
    text = textfile_metrics(collectors) if text is None else text
    try:
        return opsalt_monitoring.write_textfile(directory, filename, text)
    except opsalt_monitoring.MonitoringError as err:
        raise SaltInvocationError(str(err)) from err
    except OSError as err:
        raise CommandExecutionError(f"cannot write {filename} in {directory}: {err}") from err


def textfile_directory(directory=None):
    """
    node_exporter's textfile directory for opsalt's metrics (default
    ``monitoring:textfile:directory``), validated and checked against the
    operator policy. The SLS creates it with this path.

    CLI Example:

    .. code-block:: bash

        salt-call monitoring.textfile_directory
    """
    given = directory or _section("textfile").get("directory") or DEFAULT_TEXTFILE_DIR
    return _allowed_path(given, "monitoring:textfile:directory")


# -- exporters and scrape targets ---------------------------------------------

# node_exporter's default vmstat fields plus the counters of a reclaim storm.
VMSTAT_FIELDS = "^(oom_kill|pgpg|pswp|pg.*fault|allocstall|pgscan_direct|pgsteal_direct|compact_stall).*"
LISTEN_PATTERN = r"^(|[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\]):[0-9]{1,5}$"
TARGET_PATTERN = r"^([A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\]):[0-9]{1,5}$"
JOB_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"


def _listen_address(value, what):
    if not isinstance(value, str) or not re.fullmatch(LISTEN_PATTERN, value):
        raise SaltInvocationError(f"{what}: {value!r} must be host:port or :port")
    return value


def node_exporter_args(listen_address=None, textfile_dir=None):
    """
    The node_exporter command-line flags opsalt wants: the vmstat fields
    with ``allocstall``, ``pgscan_direct``, ``pgsteal_direct`` and
    ``compact_stall``, the zoneinfo collector on, the textfile directory,
    and the listen address (default ``monitoring:node_exporter:listen_address``
    or ``:9100``).

    CLI Example:

    .. code-block:: bash

        salt-call monitoring.node_exporter_args
    """
    section = _section("node_exporter")
    listen = _listen_address(
        listen_address or section.get("listen_address") or ":9100", "monitoring:node_exporter:listen_address"
    )
    return [
        f"--web.listen-address={listen}",
        f"--collector.vmstat.fields={VMSTAT_FIELDS}",
        "--collector.zoneinfo",
        "--collector.textfile",
        f"--collector.textfile.directory={textfile_directory(textfile_dir)}",
    ]


# The pillar key behind each node_exporter flag that takes a value from it.
FLAG_KEYS = {
    "--web.listen-address": "monitoring:node_exporter:listen_address",
    "--collector.textfile.directory": "monitoring:textfile:directory",
}


def node_exporter_defaults():
    """
    The text of Debian's ``/etc/default/prometheus-node-exporter`` with
    :func:`node_exporter_args` as ``ARGS``. No flag holds a space or a quote
    (the patterns above refuse them), so systemd's word splitting of
    ``$ARGS`` gives exactly these flags.

    CLI Example:

    .. code-block:: bash

        salt-call monitoring.node_exporter_defaults
    """
    args = node_exporter_args()
    for arg in args:
        if re.search(r"[\s'\"\\$`]", arg):
            # only the textfile directory can (the listen address has a pattern)
            key = FLAG_KEYS.get(arg.split("=", 1)[0], "a node_exporter flag")
            raise SaltInvocationError(f"{key}: holds a space, quote, backslash or $ (systemd splits $ARGS)")
    return f'# Managed by opsalt (salt/monitoring/node_exporter): do not edit.\nARGS="{" ".join(args)}"\n'


def scrape_targets(targets=None):
    """
    Prometheus ``file_sd`` targets (JSON text) from ``targets`` (default
    ``monitoring:scrape:targets``): ``{job: [host:port, ...]}``, each job
    name and address validated. The Prometheus host reads the file with a
    ``file_sd_configs`` entry.

    CLI Example:

    .. code-block:: bash

        salt-call monitoring.scrape_targets targets='{"node": ["db1:9100"]}'
    """
    targets = _section("scrape").get("targets") if targets is None else targets
    if not isinstance(targets or {}, dict):
        raise SaltInvocationError("monitoring:scrape:targets must be a mapping of job: [host:port, ...]")
    groups = []
    for job, addresses in sorted((targets or {}).items()):
        if not isinstance(job, str) or not re.fullmatch(JOB_PATTERN, job):
            raise SaltInvocationError(f"monitoring:scrape:targets: job {job!r} must match {JOB_PATTERN}")
        if not isinstance(addresses, list):
            raise SaltInvocationError(f"monitoring:scrape:targets:{job} must be a list of host:port")
        for address in addresses:
            if not isinstance(address, str) or not re.fullmatch(TARGET_PATTERN, address):
                raise SaltInvocationError(f"monitoring:scrape:targets:{job}: {address!r} is not host:port")
        groups.append({"targets": sorted(addresses), "labels": {"job": job}})
    return json.dumps(groups, indent=2, sort_keys=True) + "\n"


# -- paths and numbers the SLS needs, each validated --------------------------

DEFAULT_NODE_EXPORTER_DEFAULTS = "/etc/default/prometheus-node-exporter"
DEFAULT_FILE_SD = "/etc/prometheus/file_sd/opsalt.json"
SCHEDULE_BOUNDS = (5, 86400)


def rules_path(path=None):
    """
    The rules file (default ``monitoring:rules:path``), validated and
    checked against the operator policy.

    CLI Example:

    .. code-block:: bash

        salt-call monitoring.rules_path
    """
    return _rules_path(path)


def file_sd_path(path=None):
    """
    The file_sd targets file (default ``monitoring:prometheus:file_sd``),
    validated and checked against the operator policy.

    CLI Example:

    .. code-block:: bash

        salt-call monitoring.file_sd_path
    """
    given = path or _section("prometheus").get("file_sd") or DEFAULT_FILE_SD
    return _allowed_path(given, "monitoring:prometheus:file_sd")


def node_exporter_defaults_file(path=None):
    """
    node_exporter's defaults file (default
    ``monitoring:node_exporter:defaults_file``), validated and checked
    against the operator policy.

    CLI Example:

    .. code-block:: bash

        salt-call monitoring.node_exporter_defaults_file
    """
    given = path or _section("node_exporter").get("defaults_file") or DEFAULT_NODE_EXPORTER_DEFAULTS
    return _allowed_path(given, "monitoring:node_exporter:defaults_file")


def textfile_path():
    """
    The full path of opsalt's textfile (directory and file name validated).

    CLI Example:

    .. code-block:: bash

        salt-call monitoring.textfile_path
    """
    filename = _section("textfile").get("filename") or DEFAULT_TEXTFILE
    if not isinstance(filename, str) or not opsalt_monitoring.TEXTFILE_NAME.fullmatch(filename):
        raise SaltInvocationError(
            f"monitoring:textfile:filename: {filename!r} must match {opsalt_monitoring.TEXTFILE_NAME.pattern}"
        )
    return os.path.join(textfile_directory(), filename)


def schedule_interval(interval=None):
    """
    Seconds between two :func:`write_textfile` runs of the Salt schedule
    (default ``monitoring:textfile:interval``, 60): an integer from 5 to 86400.

    CLI Example:

    .. code-block:: bash

        salt-call monitoring.schedule_interval
    """
    value = _section("textfile").get("interval", 60) if interval is None else interval
    low, high = SCHEDULE_BOUNDS
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise SaltInvocationError(
            f"monitoring:textfile:interval: {value!r} must be an integer from {low} to {high}"
        )
    return value


# -- redis_exporter, one per redis_aof instance ---------------------------------

DEFAULT_REDIS_EXPORTER_DIR = "/etc/prometheus/redis_exporter"
REDIS_EXPORTER_BASE_PORT = 9121
EXPORTER_USER = "prometheus"


def redis_exporter_config_dir():
    """
    The directory of the per-instance redis_exporter environment files
    (default ``monitoring:redis_exporter:config_dir``), validated and checked
    against the operator policy.

    CLI Example:

    .. code-block:: bash

        salt-call monitoring.redis_exporter_config_dir
    """
    given = _section("redis_exporter").get("config_dir") or DEFAULT_REDIS_EXPORTER_DIR
    return _allowed_path(given, "monitoring:redis_exporter:config_dir")


def _env_line(key, value, what, secret=False):
    try:
        text = opsalt_validate.line(value, what, secret=secret)
    except opsalt_validate.ValidationError as err:
        raise SaltInvocationError(str(err)) from err
    if re.search(r"[\"\\$`]", text):
        shown = "(a secret, not shown)" if secret else repr(text)
        raise SaltInvocationError(f"{what}: {shown} holds a quote, backslash, $ or backquote")
    return f'{key}="{text}"'


def _redis_exporter_env(name, instance, index):
    listen_host = _section("redis_exporter").get("listen_host") or "127.0.0.1"
    ports = _section("redis_exporter").get("ports") or {}
    port = ports.get(name) or REDIS_EXPORTER_BASE_PORT + index
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise SaltInvocationError(f"monitoring:redis_exporter:ports:{name}: {port!r} is not a port")
    listen = _listen_address(f"{listen_host}:{port}", "monitoring:redis_exporter:listen_host")
    if instance.get("unix_socket_path"):
        address = f"unix://{instance['unix_socket_path']}"
    else:
        address = f"redis://{instance.get('host') or '127.0.0.1'}:{instance.get('port') or 6379}"
        if instance.get("instance"):
            address = f"redis://{instance['instance']}"
    lines = [
        "# Managed by opsalt (salt/monitoring/redis_exporter): do not edit.",
        _env_line("REDIS_ADDR", address, f"redis_aof:instances:{name}:address"),
        _env_line("REDIS_EXPORTER_WEB_LISTEN_ADDRESS", listen, f"monitoring:redis_exporter:ports:{name}"),
    ]
    password = instance.get("password") or __salt__["config.get"]("redis_aof:password")
    if password:
        lines.append(
            _env_line("REDIS_PASSWORD", password, f"redis_aof:instances:{name}:password", secret=True)
        )
    return "\n".join(lines) + "\n", bool(password)


def _redis_exporter_plan():
    directory = redis_exporter_config_dir()
    instances = __salt__["config.get"]("redis_aof:instances") or {}
    if not isinstance(instances, dict):
        raise SaltInvocationError("redis_aof:instances must be a mapping")
    plan = {}
    for index, (name, instance) in enumerate(sorted(instances.items())):
        try:
            opsalt_validate.name(name, f"redis_aof:instances:{name}")
        except opsalt_validate.ValidationError as err:
            raise SaltInvocationError(str(err)) from err
        text, has_password = _redis_exporter_env(name, instance or {}, index)
        path = os.path.join(directory, f"{name}.env")
        plan[name] = {
            "path": path,
            "changed": opsalt_files.read_text(path) != text,
            "has_password": has_password,
        }
        plan[name]["_text"] = text
    return plan


def _public(plan):
    return {name: {k: v for k, v in entry.items() if not k.startswith("_")} for name, entry in plan.items()}


def plan_redis_exporters():
    """
    One redis_exporter environment file per ``redis_aof:instances`` entry
    (``<config_dir>/<id>.env``: the address, the listen address, and the
    password as ``REDIS_PASSWORD``, so it never reaches a command line),
    mode 0600 for the exporter's user. Returns ``{id: {path, changed,
    has_password}}``; file contents are never returned (they hold secrets).

    CLI Example:

    .. code-block:: bash

        salt-call monitoring.plan_redis_exporters
    """
    return _public(_redis_exporter_plan())


def _exporter_owner():
    try:
        import pwd

        pwd.getpwnam(EXPORTER_USER)
    except KeyError:
        return None
    return EXPORTER_USER


def apply_redis_exporters():
    """
    Write the environment files of :func:`plan_redis_exporters` that differ
    (atomically, mode 0600, owned by the ``prometheus`` user when it
    exists). Returns the ids written.

    CLI Example:

    .. code-block:: bash

        salt-call monitoring.apply_redis_exporters
    """
    plan = _redis_exporter_plan()
    owner = _exporter_owner()
    keep = opsalt_files.backup_keep(__salt__)
    written = []
    for name, entry in sorted(plan.items()):
        if entry["changed"]:
            os.makedirs(os.path.dirname(entry["path"]), mode=0o755, exist_ok=True)
            opsalt_files.atomic_write(
                entry["path"], entry["_text"], mode=0o600, user=owner, group=owner, keep_backups=keep
            )
            written.append(name)
    return written


def redis_exporter_units():
    """
    The systemd unit names of the per-instance redis_exporters
    (``prometheus-redis-exporter@<id>``), ids validated.

    CLI Example:

    .. code-block:: bash

        salt-call monitoring.redis_exporter_units
    """
    return [f"prometheus-redis-exporter@{name}" for name in sorted(_redis_exporter_plan())]
