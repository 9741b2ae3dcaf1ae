"""
ops_http_json on a real salt-master: the minion's pillar is its own document
from the demo asset API, loaded through the installed entry point.
"""

import copy
import json
import os
import subprocess

import salt.config
import salt.pillar

from tests.support.asset_api import PASSWORD, USERNAME
from tests.support.salt_venv import salt3007_venv


def test_minion_gets_its_own_document(salt_minion, salt_call_cli, set_pillar):
    set_pillar("ops", {"role": "db", "rack": "r12"})
    ret = salt_call_cli.run("pillar.items", "unmask=True")
    assert ret.returncode == 0, ret
    assert ret.data["opsalt_test"] == {"minion": salt_minion.id}
    assert ret.data["ops"] == {"role": "db", "rack": "r12"}
    assert "_errors" not in ret.data


def test_runner_fetch_and_check(salt_minion, salt_run_cli, set_pillar):
    set_pillar("ops", {"role": "web"})
    ret = salt_run_cli.run("ops_http_json.fetch", salt_minion.id)
    assert ret.returncode == 0, ret
    assert ret.data["ok"] is True
    assert ret.data["source"] == "api"
    # masked by default: runner returns land in events and the job cache
    assert ret.data["document"]["ops"] == {"role": "***"}
    assert "web" not in ret.stdout
    assert ret.data["breaker"]["state"] == "closed"
    ret = salt_run_cli.run("ops_http_json.fetch", salt_minion.id, "unmask=True", "bypass_breaker=True")
    assert ret.data["document"]["ops"] == {"role": "web"}
    ret = salt_run_cli.run("ops_http_json.check")
    assert ret.returncode == 0, ret
    assert ret.data["minions"][salt_minion.id] == "OK"
    assert ret.data["stale"] == {}
    assert [b["state"] for b in ret.data["breakers"].values()] == ["closed"]
    ret = salt_run_cli.run("ops_http_json.cache")
    assert ret.returncode == 0, ret
    assert 0 <= ret.data[salt_minion.id] < 600
    # the runner's name before 0.2.0 still answers, through the new one
    old = salt_run_cli.run("ops_pillar.fetch", salt_minion.id)
    assert old.returncode == 0, old
    assert old.data["ok"] is True and old.data["document"]["ops"] == {"role": "***"}


def _close_breaker(salt_run_cli, minion_id):
    # The outage opened the shared master's breaker; other tests need the API.
    ret = salt_run_cli.run("ops_http_json.fetch", minion_id, "bypass_breaker=True")
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
        ret = salt_run_cli.run("ops_http_json.check")
        assert ret.returncode == 1, ret
        row = ret.data["minions"][salt_minion.id]
        assert row.startswith("ERROR:") and "authentication failed" in row
        ret = salt_run_cli.run("ops_http_json.fetch", salt_minion.id)
        assert ret.data["ok"] is False
        assert ret.data["source"] is None  # on_error: fail on this master: no stale copy served
        for text in (ret.stdout, ret.stderr):
            assert PASSWORD not in text
    finally:
        asset_api.control(faults=[])
        _close_breaker(salt_run_cli, salt_minion.id)


# -- drop-in for Salt 3007's http_json -------------------------------------------

# Salt 3007.16's own http_json.ext_pillar, called directly through Salt's
# loader in a 3007.16 venv; prints the pillar (or the exception) as JSON.
_SALT3007_HTTP_JSON = """
import json, sys, tempfile
import salt.config, salt.loader
config, minion_id, grains = json.loads(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
opts = salt.config.minion_config(None)
opts.update(cachedir=tempfile.mkdtemp(), file_client="local", grains=grains)
functions = salt.loader.minion_mods(opts, utils=salt.loader.utils(opts))
pillars = salt.loader.pillars(opts, functions)
print(json.dumps(pillars["http_json"](minion_id, {}, **config)))
"""


def _salt3007_http_json(config, minion_id, grains):
    venv = salt3007_venv()
    proc = subprocess.run(
        [
            os.path.join(venv, "bin", "python"),
            "-c",
            _SALT3007_HTTP_JSON,
            json.dumps(config),
            minion_id,
            json.dumps(grains),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _opsalt(config, minion_id, grains, tmp_path):
    opts = salt.config.apply_master_config(
        {
            "root_dir": str(tmp_path),
            "cachedir": str(tmp_path / "cache"),
            "file_roots": {"base": []},
            "pillar_roots": {"base": []},
            "ext_pillar": [{"ops_http_json": config}],
        },
        copy.deepcopy(salt.config.DEFAULT_MASTER_OPTS),
    )
    return salt.pillar.Pillar(opts, grains, minion_id, "base").compile_pillar()


def test_http_json_configuration_gives_the_same_pillar_as_salt_3007(asset_api, tmp_path):
    minion_id, grains = "dropin01.example.com", {"nodename": "dropin01", "os": "Debian"}
    document = {"ops": {"role": "db", "rack": "r7"}, "list": [1, "two"]}
    asset_api.set_document(minion_id, document)
    asset_api.set_document("dropin01", {"by": "nodename"})
    # as in Salt 3007's http_json docs: url with %s, namespace, username/password, header_dict
    config = {
        "url": asset_api.url,
        "namespace": "subkey",
        "username": USERNAME,
        "password": PASSWORD,
        "header_dict": {"X-Api-Version": "2"},
    }
    theirs = _salt3007_http_json(config, minion_id, grains)
    assert theirs == {"subkey": document}
    assert _opsalt(config, minion_id, grains, tmp_path) == theirs
    # and the docs' with_grains form: the URL built from a grain alone
    grains_config = {
        "url": asset_api.url.replace("%s", "<nodename>"),
        "with_grains": True,
        "username": USERNAME,
        "password": PASSWORD,
    }
    theirs = _salt3007_http_json(grains_config, minion_id, grains)
    assert theirs == {"by": "nodename"}
    refused = _opsalt(grains_config, minion_id, grains, tmp_path)
    assert "allow_url_without_minion_id" in " ".join(refused["_errors"])  # grains are minion-controlled
    allowed = dict(grains_config, allow_url_without_minion_id=True)
    assert _opsalt(allowed, minion_id, grains, tmp_path) == theirs
