{#- A maintenance window for one pgbouncer database: PAUSE it on the
    pgbouncer hosts, apply the maintenance SLS, RESUME it whatever happened
    (failed states, timeout, a pause that did not complete):
      salt-run state.orchestrate orch.pgbouncer_maintenance pillar='{"pgbouncer_maintenance":
          {"tgt": "db*", "database": "appdb", "sls": "pgmaint.reindex", "sls_tgt": "pg1", "timeout": 300}}'
      salt-run state.orchestrate orch.pgbouncer_maintenance test=True pillar='...'   # pauses nothing
    Settings come from pillar pgbouncer_maintenance (the command line's or
    the master's); each reaches the state only through | json. -#}
{%- set maintenance = pillar.get('pgbouncer_maintenance') or {} %}

pgbouncer-maintenance-applied:
  pgbouncer_maintenance.applied:
    - name: {{ maintenance.get('sls', '') | json }}
    - database: {{ maintenance.get('database', '') | json }}
    - tgt: {{ maintenance.get('tgt', '*') | json }}
    - tgt_type: {{ maintenance.get('tgt_type', 'glob') | json }}
    - sls_tgt: {{ maintenance.get('sls_tgt') | json }}
    - sls_tgt_type: {{ maintenance.get('sls_tgt_type', 'glob') | json }}
    - timeout: {{ maintenance.get('timeout', 300) | json }}
    - pause_timeout: {{ maintenance.get('pause_timeout', 30) | json }}
    - sls_pillar: {{ maintenance.get('sls_pillar') | json }}
