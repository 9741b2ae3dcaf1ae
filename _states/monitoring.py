"""
opsalt's alert rules on the Prometheus host, over the ``monitoring``
execution module: the module renders and checks, the state compares,
honours test mode, applies and verifies.

.. code-block:: yaml

    monitoring-rules-file-managed:
      monitoring.rules_managed:
        - name: /etc/prometheus/rules/opsalt.rules.yml
"""

from opsalt_state import apply_failed, new_ret, refused, unchanged, would_change
from salt.exceptions import CommandExecutionError, SaltInvocationError

__virtualname__ = "monitoring"


def __virtual__():
    if "monitoring.plan_rules" not in __salt__:
        return (False, "the monitoring execution module is not available")
    return __virtualname__


def rules_managed(name):
    """
    Make the opsalt rules file ``name`` hold the rules rendered from ``monitoring:rules``. The new file is
    checked with ``promtool check rules`` before Prometheus is reloaded
    (``monitoring:rules:reload_url``); a file promtool refuses is replaced by
    the old one again and Prometheus is left alone.

    CLI Example:

    .. code-block:: bash

        salt-call state.single monitoring.rules_managed /etc/prometheus/rules/opsalt.rules.yml test=True
    """
    ret = new_ret(name)
    try:
        plan = __salt__["monitoring.plan_rules"](name)
    except (CommandExecutionError, SaltInvocationError) as err:
        return refused(ret, err)
    ret["name"] = plan["path"]
    if not plan["changed"]:
        return unchanged(ret, f"{plan['path']} (the opsalt rules)")
    changes = {"diff": plan["diff"], "reload": plan["reload_url"] or "not configured"}
    if __opts__["test"]:
        return would_change(
            ret, changes, f"Would update {plan['path']}, check it with promtool and reload Prometheus"
        )
    try:
        done = __salt__["monitoring.apply_rules"](name)
    except (CommandExecutionError, SaltInvocationError) as err:
        return apply_failed(ret, err)
    ret["changes"] = changes
    reloaded = (
        f"; Prometheus reloaded at {done['reloaded']}"
        if done["reloaded"]
        else "; no reload_url, not reloaded"
    )
    ret["comment"] = f"Updated {done['path']}, promtool check rules passed{reloaded}"
    return ret


def redis_exporters_managed(name):
    """
    One redis_exporter environment file per ``redis_aof:instances`` entry,
    read from the pillar at run time so no password passes through SLS
    text, written mode 0600 for the exporter's user. ``changes`` names the
    files, never their content. ``name`` is a label.

    CLI Example:

    .. code-block:: bash

        salt-call state.single monitoring.redis_exporters_managed redis-exporters test=True
    """
    ret = new_ret(name)
    try:
        plan = __salt__["monitoring.plan_redis_exporters"]()
    except (CommandExecutionError, SaltInvocationError) as err:
        return refused(ret, err)
    pending = sorted(entry["path"] for entry in plan.values() if entry["changed"])
    if not pending:
        return unchanged(ret, f"{len(plan)} redis_exporter environment file(s)")
    changes = {"files": pending}
    if __opts__["test"]:
        return would_change(ret, changes, f"Would write {', '.join(pending)}")
    try:
        __salt__["monitoring.apply_redis_exporters"]()
        left = [
            entry["path"]
            for entry in __salt__["monitoring.plan_redis_exporters"]().values()
            if entry["changed"]
        ]
    except (CommandExecutionError, SaltInvocationError) as err:
        return apply_failed(ret, err)
    if left:
        return apply_failed(ret, f"wrote the files but {', '.join(left)} still differ")
    ret["changes"] = changes
    ret["comment"] = f"Wrote {', '.join(pending)} (mode 0600)"
    return ret
