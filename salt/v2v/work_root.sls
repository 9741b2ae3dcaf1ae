{#- The work root's verdict: syntax (absolute, normalised, one line) and the
    operator's policy (opsalt:policy:v2v:allowed_paths in the minion config),
    checked by the v2v module. The states that touch the work root require
    this one, so a refused path is never created or removed. Included by
    init.sls and clean.sls. Pillar reaches this text only through `| json`.
    No `v2v` key in the pillar: nothing managed (v2v's notification). -#}
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import mapdata, present with context %}
{%- if not present %}

include:
  - {{ tplroot }}
{%- else %}
{%-   set verdict = salt['v2v.work_root_verdict'](mapdata.work_root) %}

v2v-work-root-allowed:
  test.configurable_test_state:
    - changes: False
    - result: {{ verdict.ok | json }}
    - comment: {{ verdict.comment | json }}
    - allow_test_mode_failure: True
{%- endif %}
