"""
Rolling changes with health gates.

``opsalt_rollout.rolled_out`` runs in an orchestration on the master
(``salt/orch/pgbouncer.sls``, ``salt/orch/redis_aof.sls``) and hands the
batching and gating to the ``opsalt_rollout.run`` runner; with
``test=True`` it lists the batches.

``opsalt_rollout.pending`` is what a rollout-managed component's SLS
renders outside the orchestration (``salt/opsalt/gate.jinja``): it changes
nothing and says the change waits for the rollout.
"""

from salt.exceptions import CommandExecutionError, SaltInvocationError

__virtualname__ = "opsalt_rollout"


def __virtual__():
    return __virtualname__


def pending(name, sls=None):
    """
    Report that ``name`` (a component) is rollout-managed on this host: a
    plain ``state.apply``/highstate changes nothing of it. Result ``None``
    (nothing failed, nothing applied), no changes.

    CLI Example:

    .. code-block:: bash

        salt-call state.single opsalt_rollout.pending pgbouncer
    """
    where = f" (SLS {sls})" if sls else ""
    return {
        "name": name,
        "result": None,
        "changes": {},
        "comment": (
            f"pending rollout: {name}{where} is rollout-managed (pillar opsalt_rollout:managed), so this run "
            f"changes nothing of it. Preview with `state.apply {sls or name} test=True`; apply with "
            f"`salt-run state.orchestrate orch.{name}`."
        ),
    }


def _summary(out):
    lines = [out.get("comment") or ""]
    for number, hosts in enumerate(out.get("batches") or [], 1):
        lines.append(f"batch {number}: {', '.join(hosts)}")
    return "\n".join(line for line in lines if line)


def rolled_out(name, tgt="*", tgt_type="glob", batch=1, soak=30, interval=2, **gate):
    """
    Roll the component ``name`` (``pgbouncer`` or ``redis_aof``) out to the
    minions ``tgt`` matches, in batches of ``batch`` hosts (a count, or a
    percentage like ``"25%"``), each batch gated on health for ``soak``
    seconds (checked every ``interval`` seconds). Stops at the first batch
    that fails. ``gate`` takes the health thresholds (``max_waiting``,
    ``max_wait``). In test mode the batches are listed, nothing changes.

    In an orchestration SLS (``salt/orch/pgbouncer.sls`` is one):

    .. code-block:: yaml

        pgbouncer-rolled-out:
          opsalt_rollout.rolled_out:
            - name: pgbouncer
            - tgt: 'db*'
            - batch: 25%
            - soak: 60

    CLI Example:

    .. code-block:: bash

        salt-run state.orchestrate orch.pgbouncer pillar='{"opsalt_rollout": {"batch": "25%"}}' test=True
    """
    test = __opts__["test"]
    kwargs = {key: value for key, value in gate.items() if key in ("max_waiting", "max_wait")}
    try:
        out = __salt__["saltutil.runner"](
            "opsalt_rollout.run",
            component=name,
            tgt=tgt,
            tgt_type=tgt_type,
            batch=batch,
            soak=soak,
            interval=interval,
            dry_run=test,
            **kwargs,
        )
    except (CommandExecutionError, SaltInvocationError) as err:
        return {"name": name, "result": False, "changes": {}, "comment": f"rollout of {name} failed: {err}"}
    if not isinstance(out, dict) or "result" not in out:
        return {"name": name, "result": False, "changes": {}, "comment": f"rollout of {name} failed: {out}"}
    changes = {} if test or not out.get("changed") else {"changed": out["changed"]}
    if not test and out.get("result") is False:
        changes.update({key: out[key] for key in ("failed_batch", "problems", "untouched") if out.get(key)})
    result = None if test else bool(out["result"])
    return {"name": name, "result": result, "changes": changes, "comment": _summary(out)}
