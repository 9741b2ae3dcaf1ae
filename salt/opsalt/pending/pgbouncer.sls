{#- The one "pending rollout" state of pgbouncer, included by every gated SLS
    of pgbouncer while its rollout gate is closed (opsalt/gate.jinja); Salt
    includes an SLS once, so the run reports the component once. Applied by
    hand on a host whose pillar does not list pgbouncer in
    opsalt_rollout:managed (the gate's own test), nothing is pending: one
    notification. -#}
{%- if 'pgbouncer' in ((pillar.get('opsalt_rollout') or {}).get('managed') or []) %}

opsalt-rollout-pending-pgbouncer:
  opsalt_rollout.pending:
    - name: pgbouncer
{%- else %}

opsalt-rollout-not-managed-pgbouncer:
  test.show_notification:
    - text: "pgbouncer is not rollout-managed on this host (pillar opsalt_rollout:managed): nothing pending"
{%- endif %}
