"""
salt/pgbouncer/map.jinja: defaults.yaml, the os_family block, then the
pillar, rendered by Salt's own state compiler (no state is applied).
"""

import pytest

from tests.support.asset_api import REPO_ROOT
from tests.support.loaders import make_loaders


@pytest.fixture(scope="module")
def loaders(tmp_path_factory):
    return make_loaders(
        tmp_path_factory.mktemp("minion-sls"), file_roots={"base": [f"{REPO_ROOT}/salt"]}, id="pgbouncer-sls"
    )


def _args(rendered, state_id):
    chunk = rendered[state_id]
    module = next(key for key in chunk if not key.startswith("__"))
    return {k: v for item in chunk[module] if isinstance(item, dict) for k, v in item.items()}


@pytest.mark.parametrize(
    "os_family, owner, pidfile, logfile",
    [
        ("Debian", "postgres", "/var/run/postgresql/pgbouncer.pid", "/var/log/postgresql/pgbouncer.log"),
        ("RedHat", "pgbouncer", "/var/run/pgbouncer/pgbouncer.pid", "/var/log/pgbouncer/pgbouncer.log"),
    ],
)
def test_os_family_defaults(loaders, monkeypatch, os_family, owner, pidfile, logfile):
    monkeypatch.setitem(loaders.opts["grains"], "os_family", os_family)
    rendered = loaders.modules.state.show_sls("pgbouncer", pillar={"pgbouncer": {}})
    assert isinstance(rendered, dict), rendered
    config = _args(rendered, "pgbouncer-config-file-managed")
    assert config["name"] == "/etc/pgbouncer/pgbouncer.ini"
    assert config["user"] == owner
    assert config["settings"]["pidfile"] == pidfile
    assert config["settings"]["logfile"] == logfile
    assert config["settings"]["auth_file"] == "/etc/pgbouncer/userlist.txt"
    assert _args(rendered, "pgbouncer-userlist-file-managed")["user"] == owner
    assert _args(rendered, "pgbouncer-package-installed")["name"] == "pgbouncer"


def test_pillar_wins_and_merges(loaders):
    pillar = {
        "pgbouncer": {
            "userlist_path": "/srv/pgb/users.txt",
            "settings": {"listen_port": 7432},
            "manage_service": False,
            "pidfile": "/run/pgb.pid",
        }
    }
    rendered = loaders.modules.state.show_sls("pgbouncer", pillar=pillar)
    config = _args(rendered, "pgbouncer-config-file-managed")
    assert config["settings"]["listen_port"] == 7432
    assert config["settings"]["auth_type"] == "scram-sha-256"  # merged, not replaced
    assert config["settings"]["auth_file"] == "/srv/pgb/users.txt"
    assert config["service"] is None and config["pidfile"] == "/run/pgb.pid"
    assert "pgbouncer-service-running" not in rendered


SECRETS = ("Db-Pw-9x", "Ul-Pw-1y", "Admin-Pw-2z", "Su-Pw-3w")


def _secret_pillar(**extra):
    pgbouncer = {
        "databases": {"appdb": {"host": "127.0.0.1", "dbname": "appdb", "password": SECRETS[0]}},
        "userlist": {"app": SECRETS[1], "pgb_admin": {"password": SECRETS[2], "from_pg": False}},
        "admin": {"host": "127.0.0.1", "port": 6432, "user": "pgb_admin", "password": SECRETS[2]},
        "verifier_from": {"host": "127.0.0.1", "user": "postgres", "password": SECRETS[3]},
    }
    pgbouncer.update(extra)
    return {"pgbouncer": pgbouncer}


def test_no_secret_in_rendered_sls(loaders):
    # issue 12 finding 5: the states read secrets from pillar at run time
    rendered = loaders.modules.state.show_sls("pgbouncer", pillar=_secret_pillar())
    assert isinstance(rendered, dict), rendered
    text = repr(rendered)
    for secret in SECRETS:
        assert secret not in text
    config = _args(rendered, "pgbouncer-config-file-managed")
    assert config["pillar_key"] == "pgbouncer" and "databases" not in config
    assert config["admin"] == {"host": "127.0.0.1", "port": 6432, "user": "pgb_admin"}
    userlist = _args(rendered, "pgbouncer-userlist-file-managed")
    assert "users" not in userlist and "verifier_from" not in userlist


def test_missing_pillar_key_manages_nothing(loaders):
    # issue 12 finding 6: a host the asset system does not know gets {}
    for sls in ("pgbouncer", "pgbouncer.clean", "pgbouncer.config", "pgbouncer.userlist.clean"):
        rendered = loaders.modules.state.show_sls(sls, pillar={})
        assert isinstance(rendered, dict), rendered
        assert list(rendered) == ["pgbouncer-not-managed-test-show-notification"], (sls, rendered)
        chunk = rendered["pgbouncer-not-managed-test-show-notification"]
        assert "show_notification" in chunk["test"]


POISON = "x\n\npwned-cmd-run:\n  cmd.run:\n    - name: touch /tmp/PWNED\n"
# pkg.installed and service.running check no policy: their SLS asks
# pgbouncer.name_refused and renders a refusal of the same ID instead.
REFUSED_IN_SLS = {"pkg": "pgbouncer-package-installed", "service": "pgbouncer-service-running"}


@pytest.mark.parametrize(
    "field",
    ["config_path", "userlist_path", "iterations", "restart_timeout", "auth_type", "mode", "pkg", "service"],
)
def test_pillar_values_stay_data_in_sls(loaders, field):
    # issue 12 finding 1: the lowstate of a poisoned pillar has the same
    # states and arguments as a benign one, apart from the poisoned value
    benign = loaders.modules.state.show_sls("pgbouncer", pillar=_secret_pillar())
    key = {"iterations": "scram_iterations"}.get(field, field)
    extra = {key: POISON} if field != "auth_type" else {"settings": {"auth_type": POISON}}
    poisoned = loaders.modules.state.show_sls("pgbouncer", pillar=_secret_pillar(**extra))
    assert isinstance(poisoned, dict), poisoned
    assert set(poisoned) == set(benign)
    found = False
    for state_id in benign:
        before, after = _args(benign, state_id), _args(poisoned, state_id)
        if state_id == REFUSED_IN_SLS.get(field):
            assert "fail_without_changes" in poisoned[state_id]["test"], poisoned[state_id]
            assert after["comment"].startswith(f"{field}: ") and "not a valid name" in after["comment"]
            assert after.get("require") == before.get("require"), state_id
            found = True
            continue
        assert set(before) == set(after), state_id
        for arg, value in after.items():
            if value != before[arg]:
                assert value == POISON or (isinstance(value, dict) and POISON in value.values()), (
                    state_id,
                    arg,
                )
                found = True
    assert found


@pytest.mark.parametrize(
    "field, value, state_id, clean_id, policy_key",
    [
        ("pkg", "openssh-server", "pgbouncer-package-installed", "pgbouncer-package-removed", "packages"),
        ("service", "ssh", "pgbouncer-service-running", "pgbouncer-service-dead", "services"),
    ],
)
def test_package_and_service_outside_policy_are_refused_then_operator_allows(
    loaders, tmp_path_factory, field, value, state_id, clean_id, policy_key
):
    pillar = _secret_pillar(**{field: value})
    for sls, refused_id in (("pgbouncer", state_id), ("pgbouncer.clean", clean_id)):
        rendered = loaders.modules.state.show_sls(sls, pillar=pillar)
        assert isinstance(rendered, dict), rendered
        assert "fail_without_changes" in rendered[refused_id]["test"], rendered[refused_id]
        comment = _args(rendered, refused_id)["comment"]
        assert f"{field}: {value!r} is not allowed by policy (allowed: pgbouncer)" in comment
        assert f"opsalt:policy:pgbouncer:{policy_key} in the minion configuration" in comment
    if field == "pkg":
        # what requires the package fails with it (required by ID): nothing is written
        ret = loaders.modules.state.sls("pgbouncer.userlist", test=True, pillar=pillar)
        results = {chunk["__id__"]: chunk for chunk in ret.raw.values()}
        assert results[state_id]["result"] is False
        assert results["pgbouncer-userlist-file-managed"]["result"] is False
        assert "requisite" in results["pgbouncer-userlist-file-managed"]["comment"].lower()
    # the same value, allowed by the operator in the minion config
    allowed = make_loaders(
        tmp_path_factory.mktemp("minion-sls-policy"),
        file_roots={"base": [f"{REPO_ROOT}/salt"]},
        id="pgbouncer-sls-policy",
        opsalt={"policy": {"pgbouncer": {policy_key: [value]}}},
    )
    for sls, allowed_id in (("pgbouncer", state_id), ("pgbouncer.clean", clean_id)):
        rendered = allowed.modules.state.show_sls(sls, pillar=pillar)
        assert "test" not in rendered[allowed_id], rendered[allowed_id]
        assert _args(rendered, allowed_id)["name"] == value


def test_clean_refuses_a_path_outside_policy(loaders):
    pillar = _secret_pillar(config_path="/etc/shadow", userlist_path="/etc/pgbouncer/userlist.txt")
    rendered = loaders.modules.state.show_sls("pgbouncer.clean", pillar=pillar)
    assert isinstance(rendered, dict), rendered
    refused = rendered["pgbouncer-config-file-absent"]
    assert "fail_without_changes" in refused["test"]
    comment = _args(rendered, "pgbouncer-config-file-absent")["comment"]
    assert "config_path: '/etc/shadow' is outside the allowed paths" in comment
    assert "file" in rendered["pgbouncer-userlist-file-absent"]


NOT_MANAGED = {
    "pgbouncer.package": ("manage_package", "pgbouncer-package-not-managed-test-show-notification"),
    "pgbouncer.package.clean": (
        "manage_package",
        "pgbouncer-package-clean-not-managed-test-show-notification",
    ),
    "pgbouncer.service": ("manage_service", "pgbouncer-service-not-managed-test-show-notification"),
    "pgbouncer.service.clean": (
        "manage_service",
        "pgbouncer-service-clean-not-managed-test-show-notification",
    ),
}


@pytest.mark.parametrize("sls", sorted(NOT_MANAGED))
def test_unmanaged_package_or_service_applied_alone_says_so(loaders, sls):
    # state.apply pgbouncer.package with manage_package false rendered no
    # state at all: an empty run, which salt-call reports as a failure
    flag, state_id = NOT_MANAGED[sls]
    pillar = _secret_pillar(**{flag: False})
    rendered = loaders.modules.state.show_sls(sls, pillar=pillar)
    assert isinstance(rendered, dict), rendered
    assert list(rendered) == [state_id], rendered
    assert "show_notification" in rendered[state_id]["test"]
    assert f"{flag} is false in this host's pillar" in _args(rendered, state_id)["text"]
    for test in (True, False):
        ret = loaders.modules.state.sls(sls, test=test, pillar=pillar)
        (chunk,) = ret.raw.values()
        assert chunk["result"] is True and chunk["changes"] == {}, chunk
        assert f"{flag} is false" in chunk["comment"]


def test_full_sls_includes_no_unmanaged_package_or_service(loaders):
    pillar = _secret_pillar(manage_package=False, manage_service=False)
    for sls, ids in (
        ("pgbouncer", {"pgbouncer-userlist-file-managed", "pgbouncer-config-file-managed"}),
        ("pgbouncer.clean", {"pgbouncer-config-file-absent", "pgbouncer-userlist-file-absent"}),
    ):
        rendered = loaders.modules.state.show_sls(sls, pillar=pillar)
        assert isinstance(rendered, dict), rendered
        assert set(rendered) == ids, (sls, rendered)
    userlist = _args(
        loaders.modules.state.show_sls("pgbouncer.userlist", pillar=pillar), "pgbouncer-userlist-file-managed"
    )
    assert "require" not in userlist
