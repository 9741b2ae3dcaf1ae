{#- Roll a pgbouncer change out in batches, each gated on health:
      salt-run state.orchestrate orch.pgbouncer pillar='{"opsalt_rollout": {"tgt": "db*", "batch": "25%", "soak": 60}}'
      salt-run state.orchestrate orch.pgbouncer test=True     # lists the batches
    Settings come from pillar opsalt_rollout (the command line's or the
    master's); each reaches the state only through | json. -#}
{%- set rollout = pillar.get('opsalt_rollout') or {} %}

opsalt-rollout-pgbouncer-rolled-out:
  opsalt_rollout.rolled_out:
    - name: pgbouncer
    - tgt: {{ rollout.get('tgt', '*') | json }}
    - tgt_type: {{ rollout.get('tgt_type', 'glob') | json }}
    - batch: {{ rollout.get('batch', 1) | json }}
    - soak: {{ rollout.get('soak', 30) | json }}
    - interval: {{ rollout.get('interval', 2) | json }}
    - max_waiting: {{ rollout.get('max_waiting', 0) | json }}
    - max_wait: {{ rollout.get('max_wait', 1.0) | json }}
