{#- Run one migration from the master:
      salt-run state.orchestrate v2v.orchestrate pillar='{"v2v_run": {"id": "instance-00000017", "pillar_minion": "conv01"}}'
    The definition comes from v2v:migrations:<id> in the pillar of pillar_minion;
    the runner validates the id. The state ID is fixed (no pillar text in it). -#}
{%- set run = pillar.get('v2v_run', {}) %}

v2v-orchestrate-migration-migrated:
  salt.runner:
    - name: v2v.migrate
    - mig_id: {{ run.get('id') | json }}
    - pillar_minion: {{ run.get('pillar_minion') | json }}
