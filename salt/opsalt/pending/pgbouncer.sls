{#- The one "pending rollout" state of pgbouncer, included by every gated SLS
    of pgbouncer while its rollout gate is closed (opsalt/gate.jinja); Salt
    includes an SLS once, so the run reports the component once. -#}
opsalt-rollout-pending-pgbouncer:
  opsalt_rollout.pending:
    - name: pgbouncer
