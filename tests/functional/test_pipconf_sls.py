"""
salt/pipconf rendered by Salt's own renderers in process (issue 12, findings
1 and 5): pillar reaches SLS text only as JSON scope names, state IDs are
slugs, settings and credentials are read by the states at run time (so they
are not in Salt's "Rendered data from file" log line), and a host without a
``pipconf`` key gets one notification and no changes.
"""

import logging
import os
import re

import opsalt_validate
import pytest

from tests.support.asset_api import REPO_ROOT
from tests.support.loaders import make_loaders
from tests.support.payloads import PAYLOADS, POISON

SECRET = "sls-Secret-pw-9"
SLS_UNSAFE = re.compile(opsalt_validate.SLS_UNSAFE_PATTERN)


@pytest.fixture(scope="module")
def loaders(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipconf-sls")
    return make_loaders(root, file_roots={"base": [f"{REPO_ROOT}/salt"]}, id="pipconf-sls")


def _pillar(scope, password=SECRET):
    index = f"http://deploy:{password}@127.0.0.1:8081/repository/pypi-group/simple"
    return {
        "pipconf": {
            "configs": {scope: {"settings": {"global": {"index-url": index, "timeout": 5}}}},
            "pypirc": {
                scope: {
                    "repositories": {
                        "nexus": {
                            "repository": "http://127.0.0.1:8081/repository/pypi-hosted/",
                            "username": "deploy",
                            "password": password,
                        }
                    }
                }
            },
            "kolla": {"enabled": True, "pip": {"global": {"index-url": index}}},
        }
    }


def _order(item):
    for module, args in item[1].items():
        if not module.startswith("__"):
            return next(a["order"] for a in args if isinstance(a, dict) and "order" in a)
    raise AssertionError(item)


def _shape(rendered):
    """The lowstate with each state's ID and name (the poisoned value) left out."""
    assert isinstance(rendered, dict), rendered
    shape = []
    for state_id, body in sorted(rendered.items(), key=_order):
        for module, args in body.items():
            if module.startswith("__"):
                continue
            shape.append(
                (
                    state_id.split("-")[1] if state_id.startswith("pipconf-") else state_id,
                    module,
                    [a for a in args if not (isinstance(a, dict) and "name" in a)],
                )
            )
    return shape


@pytest.mark.parametrize("sls", ["pipconf", "pipconf.clean"])
@pytest.mark.parametrize("payload", PAYLOADS, ids=[repr(p)[1:20] for p in PAYLOADS])
def test_a_poisoned_scope_key_is_only_a_value(loaders, sls, payload):
    benign = loaders.modules.state.show_sls(sls, pillar=_pillar("user:benign"))
    poisoned = loaders.modules.state.show_sls(sls, pillar=_pillar(payload))
    if SLS_UNSAFE.search(payload):
        # U+0085/U+2028/U+2029 would reach the state folded to a space (Salt's
        # `json` filter leaves them raw): the whole component is refused, the
        # field named, before any pipconf state renders.
        assert list(poisoned) == ["pipconf-pillar-refused"], poisoned
        (args,) = [body for module, body in poisoned["pipconf-pillar-refused"].items() if module == "test"]
        comment = next(a["comment"] for a in args if isinstance(a, dict) and "comment" in a)
        assert comment.startswith("pipconf:configs:"), comment
        return
    assert _shape(poisoned) == _shape(benign)
    assert not [sid for sid, body in poisoned.items() if "cmd" in body]
    for state_id, body in poisoned.items():
        assert all(ch.isalnum() or ch in "_.@-" for ch in state_id), state_id
        names = [
            a["name"]
            for args in body.values()
            if isinstance(args, list)
            for a in args
            if isinstance(a, dict) and "name" in a
        ]
        assert len(names) == 1, names
        assert names[0] in (payload, "kolla") or names[0].startswith("/etc/kolla/"), names
    assert not os.path.exists("/tmp/PWNED")


def test_the_poisoned_scope_is_refused_at_run_time(loaders):
    ret = loaders.modules.state.sls("pipconf", pillar=_pillar(POISON), test=True).raw
    states = list(ret.values())
    assert not any("cmd_|-" in key for key in ret)
    scoped = [s for s in states if s["name"] == POISON]
    assert len(scoped) == 2 and all(s["result"] is False for s in scoped)
    assert all(s["comment"].startswith("Nothing changed") for s in scoped)
    assert not os.path.exists("/tmp/PWNED")


def test_no_secret_in_the_rendered_sls_or_the_log(loaders, caplog):
    with caplog.at_level(1):
        rendered = loaders.modules.state.show_sls("pipconf", pillar=_pillar("user:builder"))
        loaders.modules.state.show_sls("pipconf.clean", pillar=_pillar("user:builder"))
    assert SECRET not in str(rendered)
    rendered_lines = [r.getMessage() for r in caplog.records if "Rendered data from file" in r.getMessage()]
    assert any("pipconf/init.sls" in line for line in rendered_lines), "Salt did not log the rendered SLS"
    assert any("pipconf/clean.sls" in line for line in rendered_lines)
    assert not [line for line in rendered_lines if SECRET in line]
    opsalt_lines = [r.getMessage() for r in caplog.records if "pipconf" in r.name]
    assert not [line for line in opsalt_lines if SECRET in line]


def test_no_pipconf_key_manages_nothing_and_says_so(loaders):
    for sls in ("pipconf", "pipconf.clean"):
        rendered = loaders.modules.state.show_sls(sls, pillar={})
        (state_id,) = rendered
        assert "test" in rendered[state_id] and "nothing" in state_id
        ret = loaders.modules.state.sls(sls, pillar={}).raw
        (result,) = ret.values()
        assert result["result"] is True and result["changes"] == {}
        assert "no pipconf key" in result["comment"]


def test_an_empty_pipconf_key_manages_nothing_and_says_so(loaders):
    ret = loaders.modules.state.sls("pipconf", pillar={"pipconf": {}}).raw
    (result,) = ret.values()
    assert result["result"] is True and result["changes"] == {} and "nothing managed" in result["comment"]


def test_salt_log_level_all_shows_no_secret(loaders, caplog, tmp_path):
    # the whole run at the lowest level: rendering, the states, the module
    pillar = _pillar("user:root", password=SECRET)
    with caplog.at_level(1):
        loaders.modules.state.sls("pipconf", pillar=pillar, test=True)
    assert caplog.records, "nothing was logged"
    assert not [r.getMessage() for r in caplog.records if SECRET in r.getMessage()]
    logging.getLogger(__name__).debug("checked %d records", len(caplog.records))
