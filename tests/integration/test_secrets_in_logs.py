"""
Secrets never reach what opsalt emits, at the lowest log level (issue 12,
"Logs at the lowest level"; docs/security.rst, promise 4).

One asset-API document gives the shared minion a distinct, recognisable
secret in every place the schema has one: pgbouncer's userlist (a plain
password, an md5 verifier, the real roles' passwords), its admin console
password, a ``password=`` in a database connection string and
``verifier_from``; pipconf's index credentials inside URLs (pip.conf and
kolla) and a .pypirc password; redis_aof's passwords, which monitoring's
redis_exporter files carry too. The files the states replace hold *old*
secrets first, so the first diffs have a secret on their ``-`` side. Every
path points into one temporary directory that an operator policy in the
minion's ``minion.d`` allows.

Then ``state.apply`` of every SLS under ``salt/`` (the runner-side ones
left out, found as in test_missing_record.py), with ``test=True`` and for
real: everything runs against servers this module starts (PostgreSQL,
pgbouncer, Redis) and files under the temporary directory. Each
``salt-call`` logs into its own file at ``--log-file-level=all``, so
Salt's ``salt.template`` "Rendered data from file" line holds the text of
every rendered opsalt SLS. No secret may appear in any record of those
files, in the JSON on stdout, in stderr or in any state's ``changes``. The
master's and the minion daemon's own logs (level ``debug``, where the
ext_pillar and the schedule run) and a ``salt-run`` at level ``all``
(the ext_pillar compiled in that process) are searched too.

No record of a ``salt-call`` run is left out: not opsalt's loggers, not
``salt.template``, not Salt core's. The only allowances are for what this
module discloses on purpose (``HARNESS_LOGGERS``, ``RUNNER_RETURN_LOGGERS``).
The search is shown not to be vacuous: every served secret is in the
unmasked pillar and in ``salt-run pillar.show_pillar``'s output, a record
logged with a secret is found with its logger, the runs' rendered SLS
lines are there, and after ``state.apply opsalt`` the secrets are in the
files the states wrote (whose SCRAM verifiers and base64 kolla pip.conf
are then searched for in every log too).
"""

import base64
import json
import os
import re
import shutil
import tempfile
import urllib.parse

import pytest
import yaml

from tests.integration.test_missing_record import SLS_NAMES
from tests.support import asset_api as asset_api_support
from tests.support.postgres import (
    ADMIN_PASSWORD,
    ADMIN_USER,
    ROLES,
    SUPERUSER_PASSWORD,
    PgBouncer,
    md5_secret,
    postgres_server,
)
from tests.support.proc_trees import writable_copy
from tests.support.redis_server import RedisServer
from tests.support.unix_user import unix_user

# Each secret once, by what it is. The values are what the asset system
# serves; the md5 verifiers are what pgbouncer's userlist state writes.
PLAIN_USERLIST = "LeakChk-pgb-userlist-5d1f"
DB_CONN_PASSWORD = "LeakChk-pgb-dbconn-8a2c"
INDEX_PASSWORD = "LeakChk-pip-index-3b7e"
KOLLA_INDEX_PASSWORD = "LeakChk-kolla-index-6c0d"
PYPIRC_PASSWORD = "LeakChk-pypirc-9e4a"
REDIS_PASSWORD = "LeakChk-redis-2f8b"
# In the files before the first run: the first diffs remove them.
OLD = {
    "old pgbouncer connection string": "LeakChk-old-dbconn-71aa",
    "old userlist password": "LeakChk-old-userlist-04be",
    "old pip.conf index credentials": "LeakChk-old-index-5c3d",
    "old .pypirc password": "LeakChk-old-pypirc-e61f",
    "old redis_exporter password": "LeakChk-old-redis-90c2",
}
# What the states write in their place: the md5 verifiers of userlist.txt.
DERIVED = {
    "pgbouncer md5 of the md5 role": md5_secret("app_md5", ROLES["app_md5"][0]),
    "pgbouncer md5 of the plain user": md5_secret("lk_plain", PLAIN_USERLIST),
    "pgbouncer md5 of the admin": md5_secret(ADMIN_USER, ADMIN_PASSWORD),
}
# What the asset system serves.
SERVED = {
    "pgbouncer userlist plain password": PLAIN_USERLIST,
    "pgbouncer userlist md5 verifier": md5_secret("lk_verifier", "LeakChk-pgb-verifier-src"),
    "pgbouncer userlist md5 role password": ROLES["app_md5"][0],
    "pgbouncer userlist scram role password": ROLES["app_scram"][0],
    "pgbouncer admin password": ADMIN_PASSWORD,
    "pgbouncer database password": DB_CONN_PASSWORD,
    "pgbouncer verifier_from password": SUPERUSER_PASSWORD,
    "pip.conf index password": INDEX_PASSWORD,
    "kolla pip index password": KOLLA_INDEX_PASSWORD,
    ".pypirc password": PYPIRC_PASSWORD,
    "redis_aof password": REDIS_PASSWORD,
}
SECRETS = {
    **SERVED,
    **DERIVED,
    **OLD,
    # The ext_pillar's own credential (read by the master from a password_file).
    "ext_pillar asset API password": asset_api_support.PASSWORD,
}

# Never left out of any search: opsalt's loggers (salt.loaded.ext.*, the
# opsalt_* helpers) and salt.template's "Rendered data from file". No Salt
# core record of a salt-call run needs leaving out either (none holds a
# secret). Two narrow allowances, both for what this module discloses on
# purpose to show the search works:
# - pytest-salt-factories' event engine (test harness, not Salt, absent
#   from a deployment) logs every event on the master's bus at debug, the
#   returns of pillar.items unmask=True, of the log.debug canary and of
#   salt-run pillar.show_pillar included. Only those records of that
#   logger are left out of the master's log. Salt names the engine's logger
#   "int" or "ext" depending on how its loader found it (both seen here).
HARNESS_LOGGERS = {"salt.loaded.int.engines.pytest_engine", "salt.loaded.ext.engines.pytest_engine"}
DELIBERATE = ("'fun': 'pillar.items'", "'fun': 'log.debug'", "'fun': 'runner.pillar.show_pillar'")
# - salt-run logs a runner's return (salt.runner "Runner return:" at debug,
#   salt.output "data = " at trace): for pillar.show_pillar that is the
#   pillar, a place docs/security.rst lists ("Where Salt itself keeps
#   pillar at rest"). Checked as exactly these two loggers in that run.
RUNNER_RETURN_LOGGERS = ["salt.output", "salt.runner"]

RECORD_START = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\s*\d+\]\[(?P<logger>[^:\]]+?)\s*:\s*\d+\s*\]")


def _forms(secret):
    """The secret as it may be printed: raw, JSON- or repr-escaped, URL-quoted."""
    return {secret, json.dumps(secret)[1:-1], repr(secret)[1:-1], urllib.parse.quote(secret, safe="")}


FORMS = {name: _forms(value) for name, value in SECRETS.items()}


def _found(text, forms=None):
    """The names of the secrets in ``text`` (default: every secret of :data:`SECRETS`)."""
    forms = FORMS if forms is None else forms
    return sorted(name for name, variants in forms.items() if any(form in text for form in variants))


def _records(path, offset=0):
    """``[(logger, text)]`` of a Salt log file from byte ``offset``; continuation lines join their record."""
    records = []
    with open(path, encoding="utf-8", errors="replace") as handle:
        handle.seek(offset)
        for line in handle:
            start = RECORD_START.match(line)
            if start:
                records.append([start.group("logger"), line])
            elif records:
                records[-1][1] += line
            else:
                records.append(["<before the first record>", line])
    return [tuple(record) for record in records]


def _leaks(records, forms=None, harness=False):
    """
    ``{logger: [secret names]}`` of the records holding a secret. With
    ``harness``, the test harness's records of this module's deliberate
    disclosures are left out (see :data:`DELIBERATE`).
    """
    leaks = {}
    for logger, text in records:
        if harness and logger in HARNESS_LOGGERS and any(fun in text for fun in DELIBERATE):
            continue
        names = _found(text, forms)
        if names:
            leaks.setdefault(logger, set()).update(names)
    return {logger: sorted(names) for logger, names in leaks.items()}


def _size(path):
    return os.path.getsize(path) if os.path.exists(path) else 0


# -- the world: servers, a user, files with old secrets, policy, pillar ------


def _write(path, text, owner=None, mode=0o600):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(path, mode)
    if owner is not None:
        os.chown(path, owner.pw_uid, owner.pw_gid)


def _seed_old_secrets(world):
    """Old secrets in the files the first real runs replace (so diffs have one on their '-' side)."""
    pgb, user, sandbox = world["pgbouncer"], world["user"], world["sandbox"]
    with open(pgb.ini, encoding="utf-8") as handle:
        ini = handle.read()
    old_db = (
        f"olddb = host=127.0.0.1 port={pgb.postgres.port} dbname=appdb"
        f" password={OLD['old pgbouncer connection string']}"
    )
    with open(pgb.ini, "w", encoding="utf-8") as handle:
        handle.write(ini.replace("[databases]\n", f"[databases]\n{old_db}\n", 1))
    with open(pgb.userlist, "a", encoding="utf-8") as handle:
        handle.write(f'"olduser" "{OLD["old userlist password"]}"\n')
    home = user.pw_dir
    for directory in (os.path.join(home, ".config"), os.path.join(home, ".config", "pip")):
        os.makedirs(directory, exist_ok=True)
        os.chown(directory, user.pw_uid, user.pw_gid)
    _write(
        os.path.join(home, ".config", "pip", "pip.conf"),
        f"[global]\nindex-url = http://deploy:{OLD['old pip.conf index credentials']}@127.0.0.1:1/simple\n",
        owner=user,
    )
    _write(
        os.path.join(home, ".pypirc"),
        "[distutils]\nindex-servers =\n    nexus\n\n[nexus]\nrepository = http://127.0.0.1:1/repository/x/\n"
        f"username = deploy\npassword = {OLD['old .pypirc password']}\n",
        owner=user,
    )
    _write(
        os.path.join(sandbox, "redis_exporter", "cache.env"),
        f'REDIS_ADDR="redis://127.0.0.1:1"\nREDIS_PASSWORD="{OLD["old redis_exporter password"]}"\n',
    )


def _document(world):
    sandbox, pgb, redis, user = world["sandbox"], world["pgbouncer"], world["redis"], world["user"]
    settings = pgb.settings()
    settings.pop("auth_file")  # map.jinja points it at userlist_path
    index = f"http://deploy:{INDEX_PASSWORD}@127.0.0.1:1/simple"
    return {
        "opsalt_test": {"minion": world["minion_id"], "leak_check": True},
        "pgbouncer": {
            "manage_package": False,  # installed by scripts/install-system-deps; no apt run in tests
            "manage_service": False,  # no systemd here: this module's pgbouncer runs from a pidfile
            "pidfile": pgb.pidfile,
            "config_path": pgb.ini,
            "userlist_path": pgb.userlist,
            "admin": pgb.admin,
            "databases": dict(
                pgb.databases(),
                lkdb={
                    "host": "127.0.0.1",
                    "port": pgb.postgres.port,
                    "dbname": "appdb",
                    "user": "app_md5",
                    "password": DB_CONN_PASSWORD,
                },
            ),
            "settings": settings,
            "userlist": {
                "app_md5": {"password": ROLES["app_md5"][0], "method": "md5"},
                "app_scram": {"password": ROLES["app_scram"][0], "method": "scram-sha-256"},
                ADMIN_USER: ADMIN_PASSWORD,
                "lk_plain": PLAIN_USERLIST,
                "lk_verifier": {"secret": SECRETS["pgbouncer userlist md5 verifier"]},
            },
            "verifier_from": pgb.postgres.conninfo(),
        },
        "pipconf": {
            "configs": {
                f"user:{user.pw_name}": {
                    "settings": {"global": {"index-url": index, "trusted-host": "127.0.0.1", "timeout": 20}}
                }
            },
            "pypirc": {
                f"user:{user.pw_name}": {
                    "repositories": {
                        "nexus": {
                            "repository": "http://127.0.0.1:1/repository/pypi-hosted/",
                            "username": "deploy",
                            "password": PYPIRC_PASSWORD,
                        }
                    }
                }
            },
            "kolla": {
                "enabled": True,
                "config_dir": os.path.join(sandbox, "kolla"),
                "template_override": os.path.join(sandbox, "kolla", "base_header.j2"),
                "build_conf": os.path.join(sandbox, "kolla", "kolla-build.conf"),
                "pip": {"global": {"index-url": f"http://deploy:{KOLLA_INDEX_PASSWORD}@127.0.0.1:1/simple"}},
            },
        },
        "redis_aof": {
            "password": REDIS_PASSWORD,  # the module's default connection password
            "settings": {"appendfsync": "everysec"},
            "instances": {
                "cache": {
                    "instance": redis.instance,
                    "password": REDIS_PASSWORD,
                    "settings": {"appendonly": True},
                }
            },
        },
        "monitoring": {
            "node_exporter": {
                "install": False,
                "run_service": False,
                "defaults_file": os.path.join(sandbox, "default", "prometheus-node-exporter"),
                "listen_address": "127.0.0.1:9100",
            },
            "redis_exporter": {
                "config_dir": os.path.join(sandbox, "redis_exporter"),
                "install": False,
                "run_service": False,
            },
            "textfile": {
                "directory": os.path.join(sandbox, "textfile"),
                "interval": 3600,
                "collectors": ["vmtune", "redis_aof", "pgbouncer"],
            },
            "prometheus": {"enabled": True, "file_sd": os.path.join(sandbox, "prometheus", "opsalt.json")},
            "rules": {"path": os.path.join(sandbox, "prometheus", "rules", "opsalt.rules.yml")},
            "scrape": {"targets": {"node": ["127.0.0.1:9100"]}},
        },
        "vmtune": {
            "config": os.path.join(sandbox, "sysctl.d", "60-opsalt-vmtune.conf"),
            "proc_root": world["proc_root"],
            "min_free_kbytes": "auto",
            "burst_kb": 25600,
            "vfs_cache_pressure": 200,
            "beacon": {"enabled": True, "interval": 3600},
        },
        "v2v": {
            "work_root": os.path.join(sandbox, "v2v"),
            "tools": {name: "/bin/true" for name in ("ssh", "virsh", "virt-v2v", "nbdkit", "rbd")},
        },
    }


@pytest.fixture(scope="module")
def world(salt_master, salt_minion, salt_call_cli, asset_api, postgres_server):
    """
    Everything the runs use, built once: a pgbouncer and a Redis of our own,
    a local user, the sandbox with old secrets, the operator policy in
    ``minion.d``, the document in the asset API. Yields a dict; puts the
    minion's document back and removes what it made afterwards.
    """
    sandbox = tempfile.mkdtemp(prefix="opsalt-leakcheck-")
    os.chmod(sandbox, 0o755)  # the local user and the service users traverse it
    pgb_root = tempfile.mkdtemp(prefix="opsalt-leakcheck-pgb-")
    os.chmod(pgb_root, 0o755)  # pgbouncer runs as the postgres user
    policy_file = os.path.join(salt_minion.config_dir, "minion.d", "zz-opsalt-leakcheck-policy.conf")
    original = asset_api.get_document(salt_minion.id)
    pgb = PgBouncer(os.path.join(pgb_root, "pgb"), postgres_server)
    redis = RedisServer(password=REDIS_PASSWORD)
    world = {
        "sandbox": sandbox,
        "logs": os.path.join(sandbox, "logs"),
        "minion_id": salt_minion.id,
        "pgbouncer": pgb,
        "redis": redis,
        "proc_root": os.path.join(sandbox, "proc"),
        "daemon_logs": {
            "master": (salt_master.config["log_file"], _size(salt_master.config["log_file"])),
            "minion daemon": (salt_minion.config["log_file"], _size(salt_minion.config["log_file"])),
        },
    }
    try:
        writable_copy("seed", world["proc_root"])
        os.makedirs(world["logs"])
        os.makedirs(os.path.join(sandbox, "sysctl.d"))  # vmtune writes into an existing directory only
        with unix_user(os.path.join(sandbox, "home"), prefix="opsalt-leak-") as user:
            world["user"] = user
            pgb.start()
            redis.start()
            _seed_old_secrets(world)
            policy = {
                "allowed_paths": [sandbox, pgb_root],
                "pgbouncer": {"admin_users": [ADMIN_USER], "stats_users": [ADMIN_USER]},
                "pipconf": {"index_hosts": ["127.0.0.1"]},
            }
            os.makedirs(os.path.dirname(policy_file), exist_ok=True)
            with open(policy_file, "w", encoding="utf-8") as handle:
                yaml.safe_dump({"opsalt": {"policy": policy}}, handle)
            asset_api.set_document(salt_minion.id, _document(world))
            assert salt_call_cli.run("saltutil.refresh_pillar", wait=True).returncode == 0
            try:
                yield world
            finally:
                # Whatever the runs left (the schedule, the beacon): gone.
                salt_call_cli.run("state.apply", "opsalt.clean")
    finally:
        asset_api.set_document(salt_minion.id, original)
        salt_call_cli.run("saltutil.refresh_pillar", wait=True)
        if os.path.exists(policy_file):
            os.unlink(policy_file)
        pgb.stop()
        redis.cleanup()
        shutil.rmtree(pgb_root, ignore_errors=True)
        shutil.rmtree(sandbox, ignore_errors=True)


def _call(cli, world, label, *args):
    """``salt-call``/``salt-run`` ``*args`` logging into its own file at level ``all``; ``(ret, records)``."""
    log_file = os.path.join(world["logs"], re.sub(r"[^A-Za-z0-9_.-]+", "_", label) + ".log")
    ret = cli.run(f"--log-file={log_file}", "--log-file-level=all", *args)
    return ret, _records(log_file)


def _assert_nothing_emitted(ret, records, label):
    assert isinstance(ret.data, dict), (label, ret)
    in_changes = {key: _found(json.dumps(state.get("changes"))) for key, state in ret.data.items()}
    in_changes = {key: names for key, names in in_changes.items() if names}
    assert not in_changes, f"{label}: secrets in changes: {in_changes}"
    assert not _found(json.dumps(ret.data)), f"{label}: secrets in the return: {_found(json.dumps(ret.data))}"
    assert not _found(ret.stdout), f"{label}: secrets on stdout: {_found(ret.stdout)}"
    assert not _found(ret.stderr), f"{label}: secrets on stderr: {_found(ret.stderr)}"
    leaks = _leaks(records)
    assert not leaks, f"{label}: secrets in log records, by logger: {leaks}"


def _read(path):
    with open(path, encoding="utf-8") as handle:
        return handle.read()


# -- the search is not vacuous ---------------------------------------------


def test_every_secret_is_in_the_pillar_and_a_logged_secret_is_found(salt_call_cli, world):
    ret = salt_call_cli.run("pillar.items", "unmask=True")
    assert ret.returncode == 0, ret
    assert _found(json.dumps(ret.data)) == sorted(SERVED)
    assert ret.data["opsalt_test"]["leak_check"] is True
    # A record that holds a secret is found in such a file, with its logger
    # (salt.channel.client logs the job's load at trace, its arguments too).
    ret, records = _call(salt_call_cli, world, "canary", "log.debug", REDIS_PASSWORD)
    assert ret.returncode == 0, ret
    leaks = _leaks(records)
    assert leaks.get("salt.loaded.int.module.logmod") == ["redis_aof password"], leaks
    # The old secrets are in the files the first runs replace.
    assert "old userlist password" in _found(_read(world["pgbouncer"].userlist))
    assert "old .pypirc password" in _found(_read(os.path.join(world["user"].pw_dir, ".pypirc")))


def test_textfile_collectors_emit_no_secret(salt_call_cli, world):
    # What the monitoring SLS schedules: the redis_aof and pgbouncer
    # collectors log in with the pillar's passwords.
    directory = os.path.join(world["sandbox"], "textfile-direct")
    os.makedirs(directory)
    ret, records = _call(
        salt_call_cli, world, "write_textfile", "monitoring.write_textfile", f"directory={directory}"
    )
    assert ret.returncode == 0, ret
    text = _read(ret.data)
    for collector in ("vmtune", "redis_aof", "pgbouncer"):  # each one logged in and measured
        assert f'opsalt_monitoring_collector_up{{collector="{collector}"}} 1' in text, text
    assert not _found(text) and not _found(ret.stdout) and not _found(ret.stderr)
    leaks = _leaks(records)
    assert not leaks, leaks


# -- state.apply of every SLS, test mode then for real ------------------------

RUNS = [(sls, mode) for sls in SLS_NAMES for mode in ("test", "real")]


def _written_secrets(world):
    """
    After ``state.apply opsalt``: the served secrets are in the files the
    states wrote (so the runs did handle them); returns the secrets only
    those files hold: userlist.txt's SCRAM verifiers and the base64
    pip.conf of the kolla header.
    """
    pgb, home, sandbox = world["pgbouncer"], world["user"].pw_dir, world["sandbox"]
    expected = {
        pgb.userlist: ["pgbouncer md5 of the plain user", "pgbouncer userlist md5 verifier"],
        pgb.ini: ["pgbouncer database password"],
        os.path.join(home, ".config", "pip", "pip.conf"): ["pip.conf index password"],
        os.path.join(home, ".pypirc"): [".pypirc password"],
        os.path.join(sandbox, "redis_exporter", "cache.env"): ["redis_aof password"],
    }
    for path, names in expected.items():
        assert set(names) <= set(_found(_read(path))), (path, _found(_read(path)))
    written = {}
    for user, secret in re.findall(r'^"([^"]+)" "([^"]+)"$', _read(pgb.userlist), re.MULTILINE):
        if secret.startswith("SCRAM-SHA-256$"):
            written[f"userlist SCRAM verifier of {user}"] = secret
    (blob,) = re.findall(r"echo (\S+) \| base64 -d", _read(os.path.join(sandbox, "kolla", "base_header.j2")))
    assert KOLLA_INDEX_PASSWORD in base64.b64decode(blob).decode()
    written["kolla header's base64 pip.conf"] = blob
    assert len(written) >= 2, written
    return written


@pytest.mark.parametrize("sls, mode", RUNS, ids=[f"{sls}-{mode}" for sls, mode in RUNS])
def test_state_apply_emits_no_secret(salt_call_cli, world, sls, mode):
    label = f"state.apply-{sls}-{mode}"
    args = ("state.apply", sls, "test=True") if mode == "test" else ("state.apply", sls)
    ret, records = _call(salt_call_cli, world, label, *args)
    # (pgbouncer.package and .service with manage_package/manage_service
    # false render one notification each.)
    # The log really is at the lowest level: Salt logged the rendered SLS text.
    rendered = [
        text for logger, text in records if logger == "salt.template" and "Rendered data from file" in text
    ]
    path = sls.replace(".", "/")
    assert any(f"/{path}.sls:" in text or f"/{path}/init.sls:" in text for text in rendered), label
    _assert_nothing_emitted(ret, records, label)
    failed = {key: state["comment"] for key, state in ret.data.items() if state["result"] is False}
    assert not failed, (label, failed)
    if sls == "opsalt" and mode == "test":
        # the first plan of every component: old secrets on the diffs' '-' side, masked
        assert "***" in json.dumps({key: state["changes"] for key, state in ret.data.items()})
    if sls == "opsalt" and mode == "real":
        world["written"] = _written_secrets(world)


def test_secrets_the_states_wrote_are_in_no_log(world):
    # The SCRAM verifiers and the kolla blob exist only once the states
    # wrote them; every log of the runs above is searched for them too.
    assert world.get("written"), "needs this module's state.apply runs (run the whole module)"
    forms = {name: _forms(value) for name, value in world["written"].items()}
    for name in sorted(os.listdir(world["logs"])):
        leaks = _leaks(_records(os.path.join(world["logs"], name)), forms)
        assert not leaks, (name, leaks)


# -- the master's side and the daemons ----------------------------------------


def test_ext_pillar_compiled_at_level_all(salt_run_cli, world, asset_api):
    # pillar.show_pillar compiles the pillar inside salt-run, the
    # ops_http_json ext_pillar included: its output is the pillar (the
    # secrets are there), and of its log records only Salt's runner-return
    # lines hold them.
    ret, records = _call(salt_run_cli, world, "show_pillar", "pillar.show_pillar", world["minion_id"])
    assert ret.returncode == 0, ret
    assert _found(ret.stdout) == sorted(SERVED)
    fetched = f'"GET /api/salt/{world["minion_id"]}/pillars/ HTTP/1.1"'
    assert any(fetched in text and str(asset_api.port) in text for _, text in records), "no ext_pillar fetch"
    leaks = _leaks(records)
    assert sorted(leaks) == RUNNER_RETURN_LOGGERS, leaks
    # opsalt's own runner masks the document by default.
    ret, records = _call(
        salt_run_cli, world, "ops_http_json.fetch", "ops_http_json.fetch", world["minion_id"]
    )
    assert ret.returncode == 0, ret
    assert ret.data["document"]["pgbouncer"]["admin"]["password"] == "***", ret.data
    assert not _found(ret.stdout) and not _found(ret.stderr), _found(ret.stdout + ret.stderr)
    leaks = _leaks(records)
    assert not leaks, leaks


def test_daemon_logs_hold_no_secret(world):
    # The shared master (its ext_pillar served every run's pillar) and the
    # minion daemon (pillar refreshes, the beacon) log at debug: everything
    # they wrote since this module started.
    forms = {**FORMS, **{name: _forms(value) for name, value in (world.get("written") or {}).items()}}
    for name, (path, offset) in world["daemon_logs"].items():
        records = _records(path, offset)
        assert len(records) > 100, name  # they did log this module's work
        leaks = _leaks(records, forms, harness=True)
        assert not leaks, (name, leaks)


def test_the_shared_minion_is_left_as_found(salt_call_cli, world):
    # The real runs added a Salt schedule (monitoring) and a beacon (vmtune)
    # to the shared minion; opsalt.clean takes both away again.
    ret, records = _call(salt_call_cli, world, "final-opsalt.clean", "state.apply", "opsalt.clean")
    _assert_nothing_emitted(ret, records, "final opsalt.clean")
    assert all(state["result"] is True for state in ret.data.values()), ret.data
    schedule = salt_call_cli.run("schedule.list", "return_yaml=False")
    assert schedule.returncode == 0 and "opsalt-monitoring-textfile" not in (schedule.data or {}), schedule
    beacons = salt_call_cli.run("beacons.list", "return_yaml=False")
    assert beacons.returncode == 0 and "vmtune" not in (beacons.data or {}), beacons
