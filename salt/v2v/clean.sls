{#- Remove the work root. Only local copies live there; the RBD images and
    the .bak originals are untouched (salt-run v2v.cleanup handles those).
    The path must pass the same checks as in init.sls; no `v2v` key in the
    pillar: nothing removed. -#}
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import mapdata, present, refused with context %}

{%- if refused %}

{#- init.sls renders the one refusal state. #}
include:
  - {{ tplroot }}
{%- elif not present %}

v2v-pillar-absent-nothing-managed:
  test.show_notification:
    - text: "no v2v key in this host's pillar: nothing managed"

{%- else %}

include:
  - {{ tplroot }}.work_root

v2v-work-root-directory-absent:
  file.absent:
    - name: {{ salt['v2v.work_root_verdict'](mapdata.work_root).path | json }}
    - require:
      - test: v2v-work-root-allowed
{%- endif %}
