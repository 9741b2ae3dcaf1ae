"""
``state.apply opsalt`` (salt/opsalt/init.sls) rendered by the real shared
salt-minion with pillar documents from the demo asset API: which
components are included for which pillar, in which order.
"""

import pytest

POISON = "x:\n  cmd.run:\n    - name: touch /tmp/PWNED\n\ny"

REDIS = {"instances": {"main": {"instance": "127.0.0.1:6390", "settings": {"appendonly": True}}}}
VMTUNE = {"min_free_kbytes": 65536}
PGBOUNCER = {"manage_package": False, "manage_service": False}


@pytest.fixture
def show_opsalt(asset_api, salt_minion, salt_call_cli):
    """
    ``show_opsalt(document)``: the minion's document replaced by
    ``document``, then ``state.show_low_sls opsalt`` as ``{id: chunk}``; the
    original document comes back afterwards.
    """
    original = asset_api.get_document(salt_minion.id)

    def _show(document, sls="opsalt"):
        asset_api.set_document(salt_minion.id, document)
        assert salt_call_cli.run("saltutil.refresh_pillar", wait=True).returncode == 0
        ret = salt_call_cli.run("state.show_low_sls", sls)
        assert ret.returncode == 0, ret
        assert isinstance(ret.data, list), ret
        # In the order the run executes them (the "order" Salt gave each chunk).
        return {chunk["__id__"]: chunk for chunk in sorted(ret.data, key=lambda chunk: chunk["order"])}

    try:
        yield _show
    finally:
        asset_api.set_document(salt_minion.id, original)
        salt_call_cli.run("saltutil.refresh_pillar", wait=True)


def _components(chunks):
    return {chunk["__sls__"].split(".")[0] for chunk in chunks.values()}


def _order(chunks, component):
    return [chunk["order"] for chunk in chunks.values() if chunk["__sls__"].split(".")[0] == component]


def test_only_the_components_whose_key_is_present(show_opsalt):
    chunks = show_opsalt({"redis_aof": REDIS})
    assert _components(chunks) == {"redis_aof"}
    assert "redis_aof-main-aof-settings-configured" in chunks
    chunks = show_opsalt({"vmtune": VMTUNE, "pgbouncer": PGBOUNCER})
    assert _components(chunks) == {"vmtune", "pgbouncer"}
    assert {"vmtune-sysctls-tuned", "pgbouncer-config-file-managed"} <= set(chunks)


def test_safe_order_kernel_then_redis_then_pgbouncer(show_opsalt):
    chunks = show_opsalt({"pgbouncer": PGBOUNCER, "redis_aof": REDIS, "vmtune": VMTUNE})
    assert _components(chunks) == {"vmtune", "redis_aof", "pgbouncer"}
    assert max(_order(chunks, "vmtune")) < min(_order(chunks, "redis_aof"))
    assert max(_order(chunks, "redis_aof")) < min(_order(chunks, "pgbouncer"))


def test_no_component_key_manages_nothing(show_opsalt):
    for sls in ("opsalt", "opsalt.clean"):
        chunks = show_opsalt({"unrelated": {"a": 1}}, sls=sls)
        assert len(chunks) == 1, chunks
        ((state_id, chunk),) = chunks.items()
        assert state_id.startswith("opsalt-") and chunk["__sls__"] == sls
        assert chunk["state"] == "test" and chunk["fun"] == "show_notification"  # nothing managed


def test_pillar_keys_never_become_includes_or_states(show_opsalt):
    benign = show_opsalt({"redis_aof": REDIS})
    poisoned = show_opsalt({"redis_aof": REDIS, POISON: {"cmd.run": 1}, "opsalt": {"components": ["x"]}})
    assert set(poisoned) == set(benign)
    assert all(chunk["state"] != "cmd" for chunk in poisoned.values())


def test_clean_includes_the_clean_sls_of_present_components(show_opsalt):
    chunks = show_opsalt({"redis_aof": REDIS, "vmtune": VMTUNE}, sls="opsalt.clean")
    assert {chunk["__sls__"] for chunk in chunks.values()} <= {"redis_aof.clean", "vmtune.clean"}
    assert max(_order(chunks, "redis_aof")) < min(_order(chunks, "vmtune"))
