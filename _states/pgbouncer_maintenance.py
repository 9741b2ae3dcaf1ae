"""
A pgbouncer maintenance window as an orchestration step.

``pgbouncer_maintenance.applied`` runs in an orchestration on the master
(``salt/orch/pgbouncer_maintenance.sls``) and hands the window to the
``pgbouncer_maintenance.run`` runner: PAUSE the database on the pgbouncer
hosts, apply the maintenance SLS, RESUME whatever happened. With
``test=True`` it says what would be paused and applied.
"""

import opsalt_state
from salt.exceptions import CommandExecutionError, SaltInvocationError

__virtualname__ = "pgbouncer_maintenance"

#: Keys of the runner's report that become the state's ``changes``.
CHANGE_KEYS = (
    "paused",
    "resumed",
    "repaired",
    "states",
    "timed_out",
    "terminated",
    "still_paused",
    "problems",
)


def __virtual__():
    return __virtualname__


def _runner_error(out):
    # A runner that raised returns Salt's text with the traceback; its last
    # line names the exception and its message.
    lines = str(out).strip().splitlines()
    return lines[-1] if lines else "no answer from the runner"


def applied(
    name,
    database,
    tgt="*",
    tgt_type="glob",
    sls_tgt=None,
    sls_tgt_type="glob",
    timeout=300,
    pause_timeout=30,
    sls_pillar=None,
):
    """
    Apply the maintenance SLS ``name`` while ``database`` is paused on the
    pgbouncer hosts ``tgt`` matches, and resume it afterwards whatever
    happened (failed states, ``timeout`` seconds passed, a pause that did not
    complete within ``pause_timeout``). The states run on ``sls_tgt``
    (default: the pgbouncer hosts) with ``sls_pillar`` as their pillar. In
    test mode nothing is paused; the comment says what would be.

    In an orchestration SLS (``salt/orch/pgbouncer_maintenance.sls`` is one):

    .. code-block:: yaml

        appdb-reindexed:
          pgbouncer_maintenance.applied:
            - name: pgmaint.reindex
            - database: appdb
            - tgt: 'db*'
            - sls_tgt: pg1
            - timeout: 300

    CLI Example:

    .. code-block:: bash

        salt-run state.orchestrate orch.pgbouncer_maintenance \\
            pillar='{"pgbouncer_maintenance": {"tgt": "db*", "database": "appdb", "sls": "pgmaint.reindex"}}'
    """
    ret = opsalt_state.new_ret(name)
    try:
        out = __salt__["saltutil.runner"](
            "pgbouncer_maintenance.run",
            database=database,
            sls=name,
            tgt=tgt,
            tgt_type=tgt_type,
            sls_tgt=sls_tgt,
            sls_tgt_type=sls_tgt_type,
            timeout=timeout,
            pause_timeout=pause_timeout,
            sls_pillar=sls_pillar,
            dry_run=__opts__["test"],
        )
    except (CommandExecutionError, SaltInvocationError) as err:
        return opsalt_state.fail(ret, f"maintenance window for {database} failed: {err}")
    if not isinstance(out, dict) or "result" not in out:
        return opsalt_state.fail(ret, f"maintenance window for {database} failed: {_runner_error(out)}")
    if __opts__["test"]:
        return opsalt_state.would_change(ret, {}, out["comment"])
    ret["changes"] = {key: out[key] for key in CHANGE_KEYS if out.get(key)}
    ret["result"] = bool(out["result"])
    ret["comment"] = out["comment"]
    return ret
