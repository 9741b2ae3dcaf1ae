"""
redis_aof execution module: validation, connection arguments, config-file
parsing, and the stall/timeout analysis on canned INFO/LATENCY/log input
(tests/support/redis_canned). Edge cases a live server cannot be made to
produce (Redis 6 one-by-one CONFIG SET with rollback, a rewrite that never
ends, an error in the middle of the watchdog window, a Redis 2.8 version)
run against a small fake client.
"""

import json
import os

import opsalt_redis_aof
import pytest
import redis
from salt.exceptions import CommandExecutionError, SaltInvocationError

from tests.support.asset_api import REPO_ROOT
from tests.support.components import load_component

CANNED = os.path.join(REPO_ROOT, "tests", "support", "redis_canned")
SECRET = "r3dis-Unit-pw"


redis_aof = load_component("_modules", "redis_aof")
CONFIG = {}


@pytest.fixture
def configure_loader_modules():
    CONFIG.clear()
    return {redis_aof: {"__salt__": {"config.get": lambda key, default=None: CONFIG.get(key, default)}}}


def _canned(name):
    with open(os.path.join(CANNED, name), encoding="utf-8") as handle:
        return handle.read()


# -- validation -------------------------------------------------------------------


@pytest.mark.parametrize(
    "given,expected",
    [
        ({"appendonly": True}, {"appendonly": "yes"}),
        ({"appendonly": "NO"}, {"appendonly": "no"}),
        ({"appendfsync": "Always"}, {"appendfsync": "always"}),
        ({"no_appendfsync_on_rewrite": False}, {"no-appendfsync-on-rewrite": "no"}),
        ({"auto-aof-rewrite-min-size": "64mb"}, {"auto-aof-rewrite-min-size": "67108864"}),
        ({"auto-aof-rewrite-min-size": "1k"}, {"auto-aof-rewrite-min-size": "1000"}),
        ({"auto-aof-rewrite-min-size": "1GB"}, {"auto-aof-rewrite-min-size": str(1024**3)}),
        ({"auto-aof-rewrite-min-size": 4096}, {"auto-aof-rewrite-min-size": "4096"}),
        ({"auto-aof-rewrite-percentage": "0"}, {"auto-aof-rewrite-percentage": "0"}),
        (
            {"latency-monitor-threshold": 100, "timeout": 15},
            {"latency-monitor-threshold": "100", "timeout": "15"},
        ),
    ],
)
def test_validate_gives_config_get_form(given, expected):
    assert redis_aof.validate(given) == expected


@pytest.mark.parametrize(
    "key, words",
    [
        ("appendfsync", ("always", "everysec", "no")),
        ("appendonly", ("yes", "no")),
        ("no-appendfsync-on-rewrite", ("yes", "no")),
        ("aof-use-rdb-preamble", ("yes", "no")),
        ("aof-load-truncated", ("yes", "no")),
        ("aof-rewrite-incremental-fsync", ("yes", "no")),
        ("aof-timestamp-enabled", ("yes", "no")),
    ],
)
def test_yaml_booleans_map_to_the_enum_word(key, words):
    # issue 14: YAML reads `no`/`yes` as booleans; `appendfsync: no` means no
    assert redis_aof.validate({key: False}) == {key: "no"}
    if "yes" in words:
        assert redis_aof.validate({key: True}) == {key: "yes"}
    else:
        with pytest.raises(SaltInvocationError, match=f"{key}: True must be one of"):
            redis_aof.validate({key: True})
    for word in words:
        assert redis_aof.validate({key: word.upper()}) == {key: word}


def test_every_yes_no_or_enum_setting_is_covered():
    # a new enum with yes/no must join the test above
    enums = {
        key
        for key, (kind, _default) in redis_aof.SETTINGS.items()
        if kind == "bool" or isinstance(kind, tuple)
    }
    assert enums == {
        "appendfsync",
        "appendonly",
        "no-appendfsync-on-rewrite",
        "aof-use-rdb-preamble",
        "aof-load-truncated",
        "aof-rewrite-incremental-fsync",
        "aof-timestamp-enabled",
    }


@pytest.mark.parametrize(
    "name, valid",
    [
        ("cache", True),
        ("redis-7.sessions_2@eu+1", True),
        ("x:\n  cmd.run:\n    - name: touch /tmp/PWNED\n\ny", False),
        ("cache\n", False),
        ("-cache", False),
        (".cache", False),
        ("a b", False),
        ("{{ x }}", False),
        ("", False),
        ("a" * 129, False),
        (5, False),
    ],
)
def test_valid_instance_name(name, valid):
    assert redis_aof.valid_instance_name(name) is valid


def _pillar(section):
    redis_aof.__salt__["pillar.get"] = lambda key, default=None, **_kw: (
        section if key == "redis_aof" else default
    )


def test_pillar_instance_is_read_at_run_time():
    _pillar(
        {
            "password": "top-level-pw",
            "persist": False,
            "settings": {"appendfsync": "everysec", "latency_monitor_threshold": 100},
            "instances": {
                "sessions": {
                    "unix_socket_path": "/run/redis/s.sock",
                    "password": SECRET,
                    "wait_timeout": 12,
                    "settings": {"appendfsync": False, "appendonly": True},
                }
            },
        }
    )
    wanted, instance, conn, persist, wait = redis_aof._resolve(
        {"timeout": 5}, None, {}, pillar_instance="sessions"
    )
    assert wanted == {
        "appendfsync": "no",
        "latency-monitor-threshold": "100",
        "appendonly": "yes",
        "timeout": "5",
    }
    assert instance is None and conn == {"unix_socket_path": "/run/redis/s.sock", "password": SECRET}
    assert persist is False and wait == 12
    # explicit arguments win; back to defaults keeps the keys
    wanted, _i, conn, persist, _w = redis_aof._resolve(
        None,
        "127.0.0.1:7000",
        {"password": "other"},
        persist=True,
        pillar_instance="sessions",
        back_to_defaults=True,
    )
    assert wanted == {"appendfsync": "everysec", "latency-monitor-threshold": "0", "appendonly": "no"}
    assert conn["password"] == "other" and persist is True


@pytest.mark.parametrize(
    "name, message",
    [
        ("x:\n  cmd.run:\n    - name: touch /tmp/PWNED\n\ny", "redis_aof:instances: 'x:\\\\n  cmd.run"),
        ("missing", "redis_aof:instances:missing is not in this host's pillar"),
    ],
)
def test_pillar_instance_refuses_bad_or_missing_names(name, message):
    _pillar({"instances": {"x:\n  cmd.run:\n    - name: touch /tmp/PWNED\n\ny": {"port": 1}}})
    with pytest.raises(SaltInvocationError, match=message):
        redis_aof.diff(pillar_instance=name)


def test_validate_reports_every_problem_at_once():
    with pytest.raises(SaltInvocationError) as err:
        redis_aof.validate(
            {
                "appendfsync": "sometimes",
                "timeout": -1,
                "appendonly": 1,
                "bogus": "x",
                "auto-aof-rewrite-min-size": "-5mb",
                "latency-monitor-threshold": True,
            }
        )
    message = str(err.value)
    for part in (
        "appendfsync: 'sometimes' must be one of always, everysec, no",
        "timeout must be between 0",
        "appendonly: 1 must be one of yes, no",
        "unknown setting 'bogus'",
        "auto-aof-rewrite-min-size must be a size",
        "latency-monitor-threshold must be a whole number",
    ):
        assert part in message


def test_validate_rejects_duplicates_and_non_mappings():
    with pytest.raises(SaltInvocationError, match="given twice"):
        redis_aof.validate({"appendfsync": "no", "APPENDFSYNC": "always"})
    with pytest.raises(SaltInvocationError, match="must be a mapping"):
        redis_aof.validate(["appendonly", "yes"])


# -- connection arguments -----------------------------------------------------------


@pytest.mark.parametrize(
    "instance,expected",
    [
        ("10.0.0.5:6380", {"host": "10.0.0.5", "port": 6380}),
        ("cache.example.com", {"host": "cache.example.com"}),
        ("[::1]:6381", {"host": "::1", "port": 6381}),
        ("/run/redis/redis.sock", {"unix_socket_path": "/run/redis/redis.sock"}),
        ("unix:///run/redis/redis.sock", {"unix_socket_path": "/run/redis/redis.sock"}),
        (None, {}),
    ],
)
def test_parse_instance(instance, expected):
    assert redis_aof._parse_instance(instance) == expected


def test_parse_instance_rejects_nonsense():
    with pytest.raises(SaltInvocationError, match="neither host:port"):
        redis_aof._parse_instance("a:b:c")


def test_connection_args_precedence():
    CONFIG.update({"redis_aof:host": "10.9.9.9", "redis_aof:port": 7000, "redis_aof:password": SECRET})
    assert redis_aof._connection_args(None, {}) == {
        "host": "10.9.9.9",
        "port": 7000,
        "password": SECRET,
        "ssl": False,
        "socket_timeout": 30,
    }
    # The instance's endpoint wins and is not mixed with the configured port.
    args = redis_aof._connection_args("127.0.0.1", {})
    assert (args["host"], args["port"], args["password"]) == ("127.0.0.1", 6379, SECRET)
    args = redis_aof._connection_args("127.0.0.1:6380", {"port": 6390, "password": "other"})
    assert (args["port"], args["password"]) == (6390, "other")
    args = redis_aof._connection_args("/run/redis.sock", {})
    assert "host" not in args and "port" not in args and args["unix_socket_path"] == "/run/redis.sock"
    with pytest.raises(SaltInvocationError, match="port must be a number"):
        redis_aof._connection_args(None, {"port": "six"})
    CONFIG["redis_aof:ssl"] = "false"  # a string from a config file is not truthy
    assert redis_aof._connection_args("10.0.0.1:6379", {})["ssl"] is False
    assert redis_aof._connection_args("10.0.0.1:6379", {"ssl": "yes"})["ssl"] is True


# -- config file --------------------------------------------------------------------


def test_parse_config_text_last_line_wins_and_units():
    parsed = redis_aof._parse_config_text(_canned("redis-quiet.conf"))
    assert parsed == {
        "appendonly": "no",
        "appendfsync": "everysec",
        "auto-aof-rewrite-min-size": str(128 * 1024**2),
        "latency-monitor-threshold": "100",
    }
    assert redis_aof._parse_config_text("include /etc/redis/common.conf\nappendonly yes\n") is None


# -- canned diagnostics -------------------------------------------------------------


def _canned_inputs():
    before = opsalt_redis_aof.parse_info(_canned("info_persistence_before.txt"))
    after = opsalt_redis_aof.parse_info(_canned("info_persistence_after.txt"))
    rows = json.loads(_canned("latency_latest.json"))
    histories = json.loads(_canned("latency_history.json"))
    return before, after, rows, histories


def test_parse_info_types_values():
    info = opsalt_redis_aof.parse_info(_canned("info_persistence_before.txt"))
    assert info["aof_delayed_fsync"] == 37 and info["current_fork_perc"] == 0.0
    assert info["aof_last_write_status"] == "ok"
    assert "# Persistence" not in info


def test_scan_log_of_redis_7_and_2_8():
    found = opsalt_redis_aof.scan_log(_canned("redis-7.0.log").splitlines())
    assert len(found["fsync_too_long"]) == 2
    assert found["aof_error"] == [
        "2113:M 25 Nov 2026 22:15:40.730 # Error writing to the AOF file: No space left on device"
    ]
    [trace] = found["watchdog"]
    assert trace["time"] == 1795649311 and trace["aof"] is True
    assert any("flushAppendOnlyFile" in frame for frame in trace["frames"])

    found = opsalt_redis_aof.scan_log(_canned("redis-2.8.log").splitlines())
    assert len(found["fsync_too_long"]) == 2
    assert [(t["time"], t["aof"]) for t in found["watchdog"]] == [(1364279708, True), (1364279725, False)]
    assert found["aof_error"] == []


def test_analyse_stalls_on_a_busy_disk():
    before, after, rows, _histories = _canned_inputs()
    lines = _canned("redis-7.0.log").splitlines()
    report = opsalt_redis_aof.analyse_stalls(before, after, rows, lines, 100, 10, "/var/log/redis/redis.log")
    assert report["aof_delayed_fsync"] == {"before": 37, "after": 41, "delta": 4}
    assert report["aof_pending_bio_fsync"] == 1
    assert set(report["aof_latency_events"]) == {"aof-write-pending-fsync", "aof-write-alone"}
    assert set(report["other_latency_events"]) == {"command"}
    assert report["stalled"] is True
    findings = "\n".join(report["findings"])
    assert "4 AOF write(s) postponed in the last 10 s" in findings
    assert "aof-write-pending-fsync: worst 12407 ms" in findings
    assert "2 'Asynchronous AOF fsync is taking too long' line(s)" in findings
    assert "1 watchdog stack trace(s) in /var/log/redis/redis.log, 1 inside AOF code" in findings
    assert report["log"]["aof_errors"] and report["log"]["watchdog_traces"] == 1


def test_analyse_stalls_quiet_with_monitor_off_and_no_log():
    before, _after, _rows, _histories = _canned_inputs()
    report = opsalt_redis_aof.analyse_stalls(
        before, before, [], None, 0, 5, None, "cannot read /x: Permission denied"
    )
    assert report["stalled"] is False
    assert report["log"] == {
        "path": None,
        "readable": False,
        "reason": "cannot read /x: Permission denied",
        "fsync_too_long": [],
        "aof_errors": [],
        "watchdog_traces": 0,
    }
    assert any("latency monitor is off" in f for f in report["findings"])
    assert report["findings"][-1] == "no AOF stall seen (but the latency monitor is off)"


def test_recommend_from_latency_history():
    _before, _after, rows, histories = _canned_inputs()
    advice = opsalt_redis_aof.recommend_from(rows, histories, None, 100)
    assert advice["worst_ms"] == 12407
    assert advice["timeout_s"] == 19  # ceil(12.407 s x 1.5)
    text = " ".join(advice["reasoning"])
    assert "aof-write-pending-fsync" in text and "SSD" in text
    pending = next(e for e in advice["evidence"] if e["event"] == "aof-write-pending-fsync")
    assert pending["samples"] == 3 and pending["aof"] is True


def test_recommend_from_history_worse_than_latest():
    rows = [["aof-fsync-always", 1795649311, 40, 40]]
    advice = opsalt_redis_aof.recommend_from(
        rows, {"aof-fsync-always": [[1795640000, 3100], [1795649311, 40]]}, None, 10
    )
    assert advice["worst_ms"] == 3100 and advice["timeout_s"] == 5


def test_recommend_from_the_2_8_log_alone():
    # The original incident: no latency monitor, only the log.
    advice = opsalt_redis_aof.recommend_from([], {}, _canned("redis-2.8.log").splitlines(), 0, margin=2)
    assert advice["worst_ms"] == 2000 and advice["timeout_s"] == 4
    text = " ".join(advice["reasoning"])
    assert "may be longer" in text and "watchdog" in text


def test_recommend_from_nothing_and_aof_only():
    advice = opsalt_redis_aof.recommend_from([], {}, None, 0)
    assert advice["timeout_s"] is None and "no evidence" in advice["reasoning"][0]
    rows = [["command", 1795648800, 900, 900]]
    assert opsalt_redis_aof.recommend_from(rows, {}, None, 100)["timeout_s"] == 2
    only = opsalt_redis_aof.recommend_from(rows, {}, None, 100, aof_only=True, minimum=3)
    assert only["worst_ms"] is None and only["timeout_s"] == 3


# -- fake client edge cases ---------------------------------------------------------


class FakeRedis:
    """
    Just enough of redis.Redis for configure/watchdog, recording commands.
    """

    version = "7.0.15"
    config_file = "/nonexistent/redis.conf"
    instances = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.commands = []
        self.config = {
            "appendonly": "no",
            "appendfsync": "everysec",
            "timeout": "0",
            "watchdog-period": "0",
            "logfile": "",
            "dir": "/tmp",
            "latency-monitor-threshold": "0",
        }
        self.persistence = {
            "aof_enabled": 0,
            "aof_rewrites": 0,
            "aof_rewrite_in_progress": 0,
            "aof_rewrite_scheduled": 0,
            "aof_last_bgrewrite_status": "ok",
        }
        self.fail_on = {}
        FakeRedis.instances.append(self)

    def info(self, section):
        if section == "server":
            return {"redis_version": self.version, "config_file": self.config_file}
        return dict(self.persistence)

    def config_get(self, key):
        return {key: self.config[key]} if key in self.config else {}

    def execute_command(self, *argv):
        argv = tuple(str(a) for a in argv)
        self.commands.append(argv)
        for prefix, error in self.fail_on.items():
            if argv[: len(prefix)] == prefix:
                raise error
        if argv[:2] == ("CONFIG", "SET"):
            pairs = dict(zip(argv[2::2], argv[3::2]))
            self.config.update(pairs)
            if pairs.get("appendonly") == "yes":
                self.persistence["aof_enabled"] = 1
                self.persistence["aof_rewrites"] += 1
                self.persistence["aof_rewrite_in_progress"] = 1
        return "OK"

    def close(self):
        pass


@pytest.fixture
def fake(monkeypatch):
    FakeRedis.instances = []
    monkeypatch.setattr(redis_aof.redis, "Redis", FakeRedis)
    return FakeRedis


def test_redis_6_sets_one_by_one_and_rolls_back(fake, monkeypatch):
    monkeypatch.setattr(fake, "version", "6.2.14")
    original = fake.__init__

    def failing_init(self, **kwargs):
        original(self, **kwargs)
        self.fail_on = {("CONFIG", "SET", "timeout"): redis.exceptions.ResponseError("ERR Invalid argument")}

    monkeypatch.setattr(fake, "__init__", failing_init)
    with pytest.raises(CommandExecutionError, match="Invalid argument"):
        redis_aof.configure({"appendfsync": "always", "timeout": 30}, "127.0.0.1:6379")
    client = fake.instances[-1]
    sets = [c for c in client.commands if c[:2] == ("CONFIG", "SET")]
    assert sets == [
        ("CONFIG", "SET", "appendfsync", "always"),
        ("CONFIG", "SET", "timeout", "30"),
        ("CONFIG", "SET", "appendfsync", "everysec"),
    ]
    assert client.config["appendfsync"] == "everysec"
    assert not any(c[:2] == ("CONFIG", "REWRITE") for c in client.commands)


def test_redis_7_sets_all_at_once_with_appendonly_last(fake, monkeypatch):
    monkeypatch.setattr(redis_aof, "_wait_for_rewrite", lambda inst, timeout, before=None: None)
    result = redis_aof.configure({"appendonly": True, "appendfsync": "always"}, "127.0.0.1:6379")
    client = fake.instances[-1]
    assert ("CONFIG", "SET", "appendfsync", "always", "appendonly", "yes") in client.commands
    assert ("CONFIG", "REWRITE") in client.commands
    assert result["persisted"] is True


def test_initial_rewrite_that_never_ends_is_not_persisted(fake, monkeypatch):
    monkeypatch.setattr(redis_aof.time, "sleep", lambda s: None)
    with pytest.raises(CommandExecutionError, match="rewrite is still running after 0 s"):
        redis_aof.configure({"appendonly": True}, "127.0.0.1:6379", wait_timeout=0)
    assert not any(c[:2] == ("CONFIG", "REWRITE") for c in fake.instances[-1].commands)


def test_failed_initial_rewrite_is_reported(fake, monkeypatch):
    original = fake.execute_command

    def rewrite_fails(self, *argv):
        reply = original(self, *argv)
        if argv[:2] == ("CONFIG", "SET"):
            self.persistence.update(aof_rewrite_in_progress=0, aof_last_bgrewrite_status="err")
        return reply

    monkeypatch.setattr(fake, "execute_command", rewrite_fails)
    with pytest.raises(CommandExecutionError, match="initial AOF rewrite failed"):
        redis_aof.configure({"appendonly": True}, "127.0.0.1:6379")


def test_no_config_file_is_live_only(fake, monkeypatch):
    monkeypatch.setattr(fake, "config_file", "")
    result = redis_aof.configure({"appendfsync": "no"}, "127.0.0.1:6379")
    assert result["persisted"] is False and "without a config file" in result["live_only"]
    assert not any(c[:2] == ("CONFIG", "REWRITE") for c in fake.instances[-1].commands)


def test_errors_never_carry_the_password(fake, monkeypatch):
    def leaky(self, *argv):
        raise redis.exceptions.ConnectionError(f"Error connecting with redis://:{SECRET}@127.0.0.1:6379")

    monkeypatch.setattr(fake, "execute_command", leaky)
    with pytest.raises(CommandExecutionError) as err:
        redis_aof.recommend_timeout("127.0.0.1:6379", password=SECRET)
    assert SECRET not in str(err.value) and "ConnectionError" in str(err.value)


def test_watchdog_restores_even_when_interrupted(fake, monkeypatch):
    def interrupted(seconds):
        raise KeyboardInterrupt

    monkeypatch.setattr(redis_aof.time, "sleep", interrupted)
    with pytest.raises(KeyboardInterrupt):
        redis_aof.watchdog("127.0.0.1:6379", period=300, duration=5)
    client = fake.instances[-1]
    assert client.commands[-1] == ("CONFIG", "SET", "watchdog-period", "0")
    assert client.config["watchdog-period"] == "0"


def test_watchdog_restore_retries_on_a_fresh_connection(fake, monkeypatch):
    monkeypatch.setattr(redis_aof.time, "sleep", lambda s: None)
    original = fake.execute_command
    calls = {"n": 0}

    def flaky_restore(self, *argv):
        if argv[:3] == ("CONFIG", "SET", "watchdog-period") and str(argv[3]) == "0":
            calls["n"] += 1
            if calls["n"] == 1:
                raise redis.exceptions.ConnectionError("Connection reset by peer")
        return original(self, *argv)

    monkeypatch.setattr(fake, "execute_command", flaky_restore)
    report = redis_aof.watchdog("127.0.0.1:6379", period=300, duration=1)
    assert report["restored_to"] == 0 and calls["n"] == 2
    assert len(fake.instances) == 2


def test_watchdog_refuses_redis_2_8_unless_forced(fake, monkeypatch):
    monkeypatch.setattr(fake, "version", "2.8.9")
    monkeypatch.setattr(redis_aof.time, "sleep", lambda s: None)
    with pytest.raises(CommandExecutionError, match="issue #1771"):
        redis_aof.watchdog("127.0.0.1:6379")
    assert not any(c[:2] == ("CONFIG", "SET") for c in fake.instances[-1].commands)
    assert redis_aof.watchdog("127.0.0.1:6379", force=True, duration=0)["restored_to"] == 0


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"duration": 601}, "duration must be between 0 and 600"),
        ({"duration": "soon"}, "duration must be a number"),
        ({"period": 0}, "period must be a positive"),
    ],
)
def test_watchdog_bounds(fake, kwargs, message):
    with pytest.raises(SaltInvocationError, match=message):
        redis_aof.watchdog("127.0.0.1:6379", **kwargs)
    assert fake.instances == []


def test_unknown_setting_on_an_old_server_changes_nothing(fake, monkeypatch):
    monkeypatch.setattr(fake, "version", "6.0.16")
    with pytest.raises(CommandExecutionError, match="has no setting 'aof-timestamp-enabled'"):
        redis_aof.configure({"appendfsync": "always", "aof-timestamp-enabled": True}, "127.0.0.1:6379")
    assert not any(c[:2] == ("CONFIG", "SET") for c in fake.instances[-1].commands)


def test_virtual_without_redis_py(monkeypatch):
    monkeypatch.setattr(redis_aof, "HAS_REDIS", False)
    ok, reason = redis_aof.__virtual__()
    assert ok is False and "pip install redis" in reason


# -- the pillar contract ---------------------------------------------------------------


def _schema():
    with open(os.path.join(REPO_ROOT, "schema", "pillar.schema.json"), encoding="utf-8") as handle:
        return json.load(handle)


def test_schema_names_exactly_the_managed_settings():
    settings = _schema()["$defs"]["redis_aof"]["$defs"]["settings"]["properties"]
    assert set(settings) == set(redis_aof.SETTINGS)
    assert settings["appendfsync"]["oneOf"][0]["enum"] == list(redis_aof.SETTINGS["appendfsync"][0])


@pytest.mark.parametrize(
    "key", ["cache", "x:\n  cmd.run:\n    - name: touch /tmp/PWNED\n\ny", "-x", "a b", "{{ x }}"]
)
def test_schema_instance_keys_agree_with_valid_instance_name(key):
    # issue 12: the schema's propertyNames stop a poisoned key at the ext_pillar
    import jsonschema

    errors = list(
        jsonschema.Draft202012Validator(_schema()).iter_errors({"redis_aof": {"instances": {key: {}}}})
    )
    assert (not errors) is redis_aof.valid_instance_name(key)


@pytest.mark.parametrize(
    "section,valid",
    [
        (
            {
                "instances": {
                    "a": {"port": 6380, "settings": {"appendonly": True, "auto-aof-rewrite-min-size": "64mb"}}
                }
            },
            True,
        ),
        (
            {"instances": {"a": {"settings": {"appendfsync": False, "no-appendfsync-on-rewrite": "yes"}}}},
            True,
        ),
        ({"instances": {"a": {"settings": {"appendfsync": True}}}}, False),
        ({"instances": {"a": {"settings": {"appendfsync": "sometimes"}}}}, False),
        ({"instances": {"a": {"settings": {"timeout": -1}}}}, False),
        ({"instances": {"a": {"settings": {"appendonly": "maybe"}}}}, False),
        ({"instances": {"a": {"prot": 6380}}}, False),
        ({"settings": {"nosuch": 1}}, False),
    ],
)
def test_schema_agrees_with_validate(section, valid):
    import jsonschema

    errors = list(jsonschema.Draft202012Validator(_schema()).iter_errors({"redis_aof": section}))
    assert (not errors) is valid, errors
    for instance in section.get("instances", {}).values():
        if "settings" in instance:
            if valid:
                redis_aof.validate(instance["settings"])
            else:
                with pytest.raises(SaltInvocationError):
                    redis_aof.validate(instance["settings"])
    if "settings" in section and not valid:
        with pytest.raises(SaltInvocationError):
            redis_aof.validate(section["settings"])


@pytest.mark.parametrize(
    "line,is_error",
    [
        (
            "1:M 01 Jan 2026 00:00:00.000 # Can't persist AOF for fsync error when the AOF fsync policy is 'always': "
            "Input/output error. Exiting...",
            True,
        ),
        (
            "1:M 01 Jan 2026 00:00:00.000 # Short write while writing to the AOF file: (nwritten=3, expected=40)",
            True,
        ),
        ("1:M 01 Jan 2026 00:00:00.000 # Error writing to the AOF file: Input/output error", True),
        ("1:M 01 Jan 2026 00:00:00.000 * AOF write error looks solved, Redis can write again.", False),
        ("1:M 01 Jan 2026 00:00:00.000 # Failed to write PID file: Permission denied", False),
        ("1:M 01 Jan 2026 00:00:00.000 * Background AOF rewrite finished successfully", False),
    ],
)
def test_scan_log_aof_errors(line, is_error):
    assert (opsalt_redis_aof.scan_log([line])["aof_error"] == [line]) is is_error


def test_a_pending_fsync_alone_is_not_a_stall():
    before, after, _rows, _histories = _canned_inputs()
    after = dict(after, aof_delayed_fsync=before["aof_delayed_fsync"])  # pending 1, nothing postponed
    report = opsalt_redis_aof.analyse_stalls(before, after, [], [], 100, 5)
    assert report["stalled"] is False
    assert any("pending right now" in f for f in report["findings"])
    assert report["findings"][-1] == "no AOF stall seen"
