"""
ops_http_json on a real salt-master: the minion's pillar is its own document
from the demo asset API, loaded through the installed entry point.
"""

from tests.support.asset_api import PASSWORD


def test_minion_gets_its_own_document(salt_minion, salt_call_cli, set_pillar):
    set_pillar("ops", {"role": "db", "rack": "r12"})
    ret = salt_call_cli.run("pillar.items", "unmask=True")
    assert ret.returncode == 0, ret
    assert ret.data["opsalt_test"] == {"minion": salt_minion.id}
    assert ret.data["ops"] == {"role": "db", "rack": "r12"}
    assert "_errors" not in ret.data


def test_runner_fetch_and_check(salt_minion, salt_run_cli, set_pillar):
    set_pillar("ops", {"role": "web"})
    ret = salt_run_cli.run("ops_pillar.fetch", salt_minion.id)
    assert ret.returncode == 0, ret
    assert ret.data["ok"] is True
    assert ret.data["source"] == "api"
    # masked by default: runner returns land in events and the job cache
    assert ret.data["document"]["ops"] == {"role": "**********"}
    assert "web" not in ret.stdout
    assert ret.data["breaker"]["state"] == "closed"
    ret = salt_run_cli.run("ops_pillar.fetch", salt_minion.id, "unmask=True", "bypass_breaker=True")
    assert ret.data["document"]["ops"] == {"role": "web"}
    ret = salt_run_cli.run("ops_pillar.check")
    assert ret.returncode == 0, ret
    assert ret.data["minions"][salt_minion.id] == "OK"
    assert ret.data["stale"] == {}
    assert [b["state"] for b in ret.data["breakers"].values()] == ["closed"]
    ret = salt_run_cli.run("ops_pillar.cache")
    assert ret.returncode == 0, ret
    assert 0 <= ret.data[salt_minion.id] < 600


def _close_breaker(salt_run_cli, minion_id):
    # The outage opened the shared master's breaker; other tests need the API.
    ret = salt_run_cli.run("ops_pillar.fetch", minion_id, "bypass_breaker=True")
    assert ret.data["ok"] is True, ret
    assert ret.data["breaker"]["state"] == "closed"


def test_api_error_reaches_pillar_errors(salt_minion, salt_call_cli, salt_run_cli, asset_api):
    # on_error: fail on this master: an API outage must not look like empty pillar.
    asset_api.control(faults=["status:500"] * 10)
    try:
        ret = salt_call_cli.run("pillar.items", "unmask=True")
        assert "_errors" in ret.data, ret
        message = " ".join(ret.data["_errors"])
        assert "HTTP 500" in message
        assert salt_minion.id in message
        assert "s3cret" not in message
        ret = salt_call_cli.run("state.apply", "test=True")
        assert ret.returncode != 0
    finally:
        asset_api.control(faults=[])
        _close_breaker(salt_run_cli, salt_minion.id)


def test_runner_reports_failures_without_secrets(salt_minion, salt_run_cli, asset_api):
    asset_api.control(faults=["status:401"] * 10)
    try:
        ret = salt_run_cli.run("ops_pillar.check")
        assert ret.returncode == 1, ret
        row = ret.data["minions"][salt_minion.id]
        assert row.startswith("ERROR:") and "authentication failed" in row
        ret = salt_run_cli.run("ops_pillar.fetch", salt_minion.id)
        assert ret.data["ok"] is False
        assert ret.data["source"] is None  # on_error: fail on this master: no stale copy served
        for text in (ret.stdout, ret.stderr):
            assert PASSWORD not in text
    finally:
        asset_api.control(faults=[])
        _close_breaker(salt_run_cli, salt_minion.id)
