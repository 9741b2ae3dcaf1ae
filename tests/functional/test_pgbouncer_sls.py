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
    assert config["owner"] == owner
    assert config["settings"]["pidfile"] == pidfile
    assert config["settings"]["logfile"] == logfile
    assert config["settings"]["auth_file"] == "/etc/pgbouncer/userlist.txt"
    assert _args(rendered, "pgbouncer-userlist-file-managed")["owner"] == owner
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
