{#- The one "pending rollout" state of redis_aof, included by every gated SLS
    of redis_aof while its rollout gate is closed (opsalt/gate.jinja); Salt
    includes an SLS once, so the run reports the component once. Applied by
    hand on a host whose pillar does not list redis_aof in
    opsalt_rollout:managed (the gate's own test), nothing is pending: one
    notification. -#}
{%- if 'redis_aof' in ((pillar.get('opsalt_rollout') or {}).get('managed') or []) %}

opsalt-rollout-pending-redis_aof:
  opsalt_rollout.pending:
    - name: redis_aof
{%- else %}

opsalt-rollout-not-managed-redis_aof:
  test.show_notification:
    - text: "redis_aof is not rollout-managed on this host (pillar opsalt_rollout:managed): nothing pending"
{%- endif %}
