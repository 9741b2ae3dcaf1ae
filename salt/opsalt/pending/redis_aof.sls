{#- The one "pending rollout" state of redis_aof, included by every gated SLS
    of redis_aof while its rollout gate is closed (opsalt/gate.jinja); Salt
    includes an SLS once, so the run reports the component once. -#}
opsalt-rollout-pending-redis_aof:
  opsalt_rollout.pending:
    - name: redis_aof
