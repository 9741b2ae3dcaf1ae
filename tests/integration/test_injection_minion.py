"""
Issue 12's injection suite through the real salt-minion ("Tests": one
poisoned document per payload class, served by the demo asset API,
``state.show_sls`` and ``state.apply test=True``).

The shared master reads the demo asset API with no ``schema:`` (the worst
case: nothing stops a document before the minion). For each payload class
of ``tests/support/payloads.py``, one document holds every component's
benign document (``tests/support/injection.py``) with the payload appended
to every string field and every map key at once. The minion then:

- renders every SLS file of every component (``state.show_low_sls``): the
  lowstate equals the benign document's apart from the poisoned values
  themselves (``injection.compare``), or the differences are failing
  ``test`` states that name a poisoned field, or the component's one
  refusal naming a field (a U+0085, U+2028 or U+2029, which Salt's
  ``| json`` leaves raw, refuses the whole component), or the render fails
  with an error that names one;
- dry-runs every component (``state.apply test=True``): no state ID the
  benign document does not give, no ``cmd`` state, nothing written.

The in-process matrix (``tests/functional/test_injection_matrix.py``)
narrows each difference down to single fields and drives the writers; this
suite shows the same holds in the daemon, with the asset API in the path.
"""

import hashlib
import os

import pytest

from tests.support.asset_api import REPO_ROOT
from tests.support.injection import (
    COMPONENTS,
    benign_documents,
    compare,
    derived_id_map,
    document_targets,
    names_field,
    poison,
    sls_names,
)
from tests.support.loaders import make_loaders
from tests.support.payloads import PAYLOAD_IDS, PAYLOADS

# Every SLS file of every component, rendered in one call.
ALL_SLS = ",".join(name for component in COMPONENTS for name in sls_names(component))

# Files a state of a benign document names, which a dry run must leave alone.
WATCHED = ("/etc/pip.conf", "/etc/pgbouncer/pgbouncer.ini", "/etc/pgbouncer/userlist.txt", "/etc/kolla")


def _benign_document():
    return {component: benign_documents(component)[0] for component in COMPONENTS}


def _poisoned_document(payload):
    document, marks = {}, {}
    for component in COMPONENTS:
        benign = benign_documents(component)[0]
        document[component], marks[component] = poison(benign, document_targets(component, benign), payload)
    return document, marks


def _fingerprint(path):
    if not os.path.exists(path):
        return None
    if os.path.isdir(path):
        return sorted(os.listdir(path))
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


@pytest.fixture(scope="module")
def state_id(tmp_path_factory):
    """pipconf's ``state_id`` (the slug an SLS derives from a scope key), in process."""
    root = tmp_path_factory.mktemp("injection-minion")
    loaders = make_loaders(root, file_roots={"base": [f"{REPO_ROOT}/salt"]}, id="injection-minion")
    return loaders.modules.pipconf.state_id


@pytest.fixture(scope="module")
def serve(asset_api, salt_minion, salt_call_cli):
    """
    ``serve(document)``: the minion's asset-API document replaced and its
    pillar refreshed; the original document comes back afterwards.
    """
    original = asset_api.get_document(salt_minion.id)

    def _serve(document):
        asset_api.set_document(salt_minion.id, document)
        assert salt_call_cli.run("saltutil.refresh_pillar", wait=True).returncode == 0

    try:
        yield _serve
    finally:
        asset_api.set_document(salt_minion.id, original)
        salt_call_cli.run("saltutil.refresh_pillar", wait=True)


def _low(salt_call_cli, sls):
    """``state.show_low_sls``: a list of chunks, or of render errors."""
    ret = salt_call_cli.run("state.show_low_sls", sls)
    assert isinstance(ret.data, list), ret
    return ret.data


def _by_component(chunks):
    grouped = {component: [] for component in COMPONENTS}
    for chunk in chunks:
        grouped[chunk["__sls__"].split(".")[0]].append(chunk)
    return grouped


@pytest.fixture(scope="module")
def benign_low(serve, salt_call_cli):
    serve(_benign_document())
    chunks = _low(salt_call_cli, ALL_SLS)
    assert all(isinstance(chunk, dict) for chunk in chunks), chunks
    grouped = _by_component(chunks)
    assert all(grouped.values()), f"a component rendered no state: {grouped}"
    return grouped


def _verdicts(salt_call_cli, benign_low, document, marks, payload, state_id):
    """
    Problems (strings) of the minion's lowstate of ``document``, component
    by component, and the IDs of the components' refusals (``REFUSAL_ID``)
    the lowstate holds in place of their states.
    """
    chunks = _low(salt_call_cli, ALL_SLS)
    if all(isinstance(chunk, dict) for chunk in chunks):
        rendered = _by_component(chunks)
    else:  # one SLS failed to render: render each component alone to see which, and compare the others
        rendered = {
            component: _low(salt_call_cli, ",".join(sls_names(component))) for component in COMPONENTS
        }
    problems, refusals = [], set()
    for component in COMPONENTS:
        targets = [(kind, path) for kind, path, _poisoned, _benign in marks[component]]
        id_map = derived_id_map(component, state_id, document, marks[component])
        verdict, details = compare(
            component, benign_low[component], rendered[component], marks[component], id_map, payload
        )
        if verdict == "different":
            problems.append(f"{component}: {details}")
        elif verdict == "refused":
            refusals |= {refusing["__id__"] for wanted, refusing in details if wanted is None}
            problems += [
                f"{component}: a refusing state names no poisoned field: {refusing}"
                for _wanted, refusing in details
                if not names_field(str(refusing), component, targets)
            ]
        elif verdict == "error":
            problems += [
                f"{component}: the render failed without naming the field: {message}"
                for message in details
                if not names_field(message, component, targets)
            ]
    return problems, refusals


@pytest.mark.parametrize("payload", PAYLOADS, ids=PAYLOAD_IDS)
def test_one_poisoned_document_per_payload_class(payload, serve, salt_call_cli, benign_low, state_id):
    before = {path: _fingerprint(path) for path in WATCHED}
    document, marks = _poisoned_document(payload)
    serve(document)
    shown = salt_call_cli.run("pillar.keys", "pgbouncer:users")
    assert sorted(shown.data) == sorted(document["pgbouncer"]["users"]), (
        "the minion did not get the poisoned document"
    )

    problems, refusals = _verdicts(salt_call_cli, benign_low, document, marks, payload, state_id)
    assert not problems, "\n".join(problems)

    dry = salt_call_cli.run("state.apply", ",".join(COMPONENTS), "test=True")
    benign_ids = {chunk["__id__"] for chunks in benign_low.values() for chunk in chunks} | refusals
    for component in COMPONENTS:
        benign_ids |= set(derived_id_map(component, state_id, document, marks[component]))
    if isinstance(dry.data, dict):
        ran = {state["__id__"]: key for key, state in dry.data.items()}
        assert set(ran) <= benign_ids, sorted(set(ran) - benign_ids)
        assert not [key for key in ran.values() if key.startswith("cmd_|")], ran
        changed_for_real = [
            key for key, state in dry.data.items() if state.get("result") is True and state["changes"]
        ]
        assert not changed_for_real, f"a dry run reported applied changes: {changed_for_real}"
    else:  # a render error, already judged above
        assert dry.returncode != 0 and isinstance(dry.data, list), dry
    assert not os.path.exists("/tmp/PWNED")
    assert {path: _fingerprint(path) for path in WATCHED} == before
