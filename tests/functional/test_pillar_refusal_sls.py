"""
Every SLS file of every component, with a pillar text that cannot pass
through SLS text (``opsalt_pillar.sls_refusal``): the file renders one
failing state naming the field and none of the component's own states, and
``state.sls ... test=True`` reports it with no changes. Issue 12: U+0085,
U+2028 and U+2029 used to reach a state folded to a space (or, in a map key
handed over as JSON, to fail the SLS with a YAML error naming no field).
"""

import pytest

from tests.support.asset_api import REPO_ROOT
from tests.support.injection import COMPONENTS, benign_documents, sls_names
from tests.support.loaders import make_loaders

# Per component, documents with the character at "<X>": in a value, then in
# a map key; each with the path its refusal must start with.
FIELDS = {
    "pgbouncer": [
        ({"settings": {"pidfile": "/run/postgresql/pgbouncer<X>.pid"}}, "pgbouncer:settings:pidfile:"),
        ({"users": {"app<X>": {"pool_mode": "session"}}}, "pgbouncer:users:"),
    ],
    "pipconf": [
        ({"configs": {"global": {"settings": {"global": {"timeout": "6<X>0"}}}}}, "pipconf:configs:global:"),
        ({"pypirc": {"user:builder<X>": {"repositories": {}}}}, "pipconf:pypirc:"),
    ],
    "redis_aof": [
        ({"host": "127.0.0.1<X>"}, "redis_aof:host:"),
        ({"instances": {"cache<X>": {"port": 6380}}}, "redis_aof:instances:"),
    ],
    "v2v": [
        ({"work_root": "/var/lib/opsalt-v2v<X>"}, "v2v:work_root:"),
        ({"migrations": {"vm<X>": {"source_host": "xen01"}}}, "v2v:migrations:"),
    ],
    "vmtune": [
        ({"vfs_cache_pressure": 150, "proc_root": "/proc<X>"}, "vmtune:proc_root:"),
        ({"beacon": {"enabled<X>": True}}, "vmtune:beacon:"),
    ],
    "monitoring": [
        ({"textfile": {"filename": "opsalt<X>.prom"}}, "monitoring:textfile:filename:"),
        ({"rules": {"for": {"VmtuneDirectReclaim<X>": "5m"}}}, "monitoring:rules:for:"),
    ],
}

# SLS files that read no component key: v2v.orchestrate runs on the master
# with the orchestration's own pillar (v2v_run), never the asset system's.
ORCHESTRATIONS = {"v2v.orchestrate"}

CHARACTERS = {"NEL": "\x85", "LS": "\u2028", "PS": "\u2029", "DEL": "\x7f", "C1": "\x9b"}


def _with(value, character):
    """``value`` with every "<X>" (in keys and strings) replaced by ``character``."""
    if isinstance(value, str):
        return value.replace("<X>", character)
    if isinstance(value, dict):
        return {_with(key, character): _with(item, character) for key, item in value.items()}
    return value


def _refusal(low):
    """The one chunk of ``low`` (a lowstate), which must be a component's refusal."""
    assert isinstance(low, list) and all(isinstance(chunk, dict) for chunk in low), low
    assert len(low) == 1, low
    (chunk,) = low
    assert chunk["__id__"].endswith("-pillar-refused"), chunk
    assert (chunk["state"], chunk["fun"], chunk["result"]) == ("test", "configurable_test_state", False), (
        chunk
    )
    return chunk


@pytest.fixture(scope="module")
def loaders(tmp_path_factory):
    return make_loaders(
        tmp_path_factory.mktemp("refusal-sls"), file_roots={"base": [f"{REPO_ROOT}/salt"]}, id="refusal-sls"
    )


def test_every_component_has_a_field():
    assert sorted(FIELDS) == sorted(COMPONENTS)


@pytest.mark.parametrize("character", CHARACTERS.values(), ids=CHARACTERS.keys())
@pytest.mark.parametrize(
    "component, document, named",
    [(component, document, named) for component, fields in FIELDS.items() for document, named in fields],
    ids=[f"{component}-{kind}" for component in FIELDS for kind in ("value", "key")],
)
def test_every_sls_file_renders_one_refusal_naming_the_field(loaders, component, document, named, character):
    pillar = {component: _with(document, character)}
    for sls in sorted(set(sls_names(component)) - ORCHESTRATIONS):
        chunk = _refusal(loaders.modules.state.show_low_sls(sls, pillar=pillar))
        assert chunk["__id__"] == f"{component}-pillar-refused", sls
        comment = chunk["comment"]
        assert comment.startswith(named), (sls, comment)
        assert f"holds U+{ord(character):04X}" in comment, comment
        assert comment.isascii(), comment


def test_a_dry_run_reports_the_refusal_without_changes(loaders):
    pillar = {"pgbouncer": _with(FIELDS["pgbouncer"][0][0], "\u2028")}
    ret = loaders.modules.state.sls("pgbouncer", test=True, pillar=pillar).raw
    (state,) = ret.values()
    assert state["result"] is False and state["changes"] == {}, state
    assert state["comment"].startswith("pgbouncer:settings:pidfile: holds U+2028"), state


def test_a_map_key_is_shown_escaped_and_a_value_not_at_all(loaders):
    pillar = {
        "pgbouncer": {"users": {"app\u2028x": {}}, "userlist": {"app": "S3cret\u2028auth_type = trust"}}
    }
    comment = _refusal(loaders.modules.state.show_low_sls("pgbouncer", pillar=pillar))["comment"]
    assert comment.startswith('pgbouncer:users:"app\\u2028x": holds U+2028'), comment
    del pillar["pgbouncer"]["users"]
    low = loaders.modules.state.show_low_sls("pgbouncer", pillar=pillar)
    assert _refusal(low)["comment"].startswith("pgbouncer:userlist:app: holds U+2028")
    assert "S3cret" not in str(low) and "trust" not in str(low)


def test_a_benign_document_renders_the_components_states(loaders):
    for component in COMPONENTS:
        low = loaders.modules.state.show_low_sls(
            component, pillar={component: benign_documents(component)[0]}
        )
        assert isinstance(low, list) and low, (component, low)
        refusals = [chunk for chunk in low if chunk["__id__"].endswith("-pillar-refused")]
        assert not refusals, refusals
