"""
A host the asset system does not know: the demo asset API answers 404 for
the shared minion, the ext_pillar's default ``missing: empty`` gives it
``{}``, and ``state.apply`` of every SLS in the tree (discovered by walking
``salt/``) manages nothing: each run holds only notification states, all
``True``, no changes, in test mode and for real, and no file that an SLS
could write changed (issue 12, "a missing asset record wipes a host").
"""

import os

import pytest

from tests.support.asset_api import REPO_ROOT

SALT_TREE = os.path.join(REPO_ROOT, "salt")
# Applied on the master by state.orchestrate, never on a minion.
RUNNER_SIDE = ("orch/", "v2v/orchestrate.sls")
COMPONENT_KEYS = ("vmtune", "pipconf", "redis_aof", "pgbouncer", "monitoring", "v2v", "opsalt_rollout")
# Where the SLS write with their defaults (a 404 host has no other values).
# The schedule and beacons (persisted in the minion's minion.d, which Salt
# itself rewrites as the minion connects) are compared through Salt instead.
WRITTEN_BY_DEFAULT = (
    "/etc/default/prometheus-node-exporter",
    "/var/lib/prometheus/node-exporter",
    "/etc/prometheus",
    "/etc/systemd/system/prometheus-redis-exporter@.service",
    "/etc/pgbouncer",
    "/etc/sysctl.d",
    "/var/lib/opsalt-v2v",
    "/etc/pip.conf",
    "/etc/kolla",
)


def _sls_names():
    names = []
    for directory, _, files in os.walk(SALT_TREE):
        for filename in files:
            path = os.path.relpath(os.path.join(directory, filename), SALT_TREE)
            if not filename.endswith(".sls") or path.startswith(RUNNER_SIDE):
                continue
            name = path[: -len(".sls")].replace(os.sep, ".")
            names.append(name[: -len(".init")] if name.endswith(".init") else name)
    return sorted(names)


SLS_NAMES = _sls_names()


def _snapshot(paths):
    """``{path: (mode, size, mtime_ns)}`` of every file and directory under ``paths``; absent ones as None."""
    seen = {}
    for top in paths:
        if not os.path.lexists(top):
            seen[top] = None
            continue
        names = [top]
        if os.path.isdir(top) and not os.path.islink(top):
            names += [os.path.join(d, n) for d, dirs, files in os.walk(top) for n in dirs + files]
        for name in names:
            st = os.lstat(name)
            seen[name] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return seen


def _host_state(salt_call_cli):
    """What an SLS could have changed: the default paths, the schedule, the beacons."""
    found = [_snapshot(WRITTEN_BY_DEFAULT)]
    for function in ("schedule.list", "beacons.list"):
        ret = salt_call_cli.run(function, "return_yaml=False")
        assert ret.returncode == 0, ret
        found.append(ret.data)
    return found


@pytest.fixture(scope="module")
def unknown_host(asset_api, salt_minion, salt_call_cli):
    """
    The shared minion with no document in the asset API (404) and a
    refreshed pillar; its document comes back afterwards. Yields the
    state of the host before any run: ``(files, schedule, beacons)``.
    """
    original = asset_api.get_document(salt_minion.id)
    try:
        misses = asset_api.stats()["statuses"].get("404", 0)
        asset_api.set_document(salt_minion.id, None)
        assert salt_call_cli.run("saltutil.refresh_pillar", wait=True).returncode == 0
        assert asset_api.stats()["statuses"].get("404", 0) > misses, "the asset API served no 404"
        ret = salt_call_cli.run("pillar.items", "unmask=True")
        assert ret.returncode == 0, ret
        assert not set(ret.data) & {*COMPONENT_KEYS, "opsalt_test"}, ret.data
        yield _host_state(salt_call_cli)
    finally:
        asset_api.set_document(salt_minion.id, original)
        salt_call_cli.run("saltutil.refresh_pillar", wait=True)


def test_every_sls_is_discovered():
    components = [key for key in COMPONENT_KEYS if key != "opsalt_rollout"]
    assert {*components, *(f"{c}.clean" for c in components)} <= set(SLS_NAMES)
    assert {
        "opsalt",
        "opsalt.clean",
        "monitoring.node_exporter",
        "monitoring.textfile.clean",
        "vmtune.beacon",
    } <= set(SLS_NAMES)
    assert "orch.pgbouncer" not in SLS_NAMES and "v2v.orchestrate" not in SLS_NAMES


def _only_notifications(ret):
    assert ret.returncode == 0, ret
    assert isinstance(ret.data, dict) and ret.data, ret
    for key, state in ret.data.items():
        parts = key.split("_|-")
        assert f"{parts[0]}.{parts[-1]}" == "test.show_notification", (key, state)
        assert state["result"] is True and state["changes"] == {}, (key, state)
        assert "pillar" in state["comment"], (key, state)  # it says why nothing is managed


@pytest.mark.parametrize("sls", SLS_NAMES)
def test_unknown_host_state_apply_manages_nothing(unknown_host, salt_call_cli, sls):
    # test mode first: a real run happens only for an SLS that plans nothing
    _only_notifications(salt_call_cli.run("state.apply", sls, "test=True"))
    _only_notifications(salt_call_cli.run("state.apply", sls))


def test_unknown_host_no_file_was_written(unknown_host, salt_call_cli):
    # runs after every state.apply above (pytest keeps the order of the file)
    (before, *salt_before), (after, *salt_after) = unknown_host, _host_state(salt_call_cli)
    changed = {path: (before.get(path), after.get(path)) for path in set(before) | set(after)}
    assert after == before, {path: states for path, states in changed.items() if states[0] != states[1]}
    assert salt_after == salt_before, "the schedule or the beacons changed"
