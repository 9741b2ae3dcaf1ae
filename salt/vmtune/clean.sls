{#- Stop tuning: put the live values back to those recorded before vmtune
    changed them, remove the persisted sysctl.d file (kept as a backup), and
    the beacon if the pillar enables it. No `vmtune` key in the pillar:
    nothing managed. Pillar reaches this text only through `| json`. #}
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import mapdata as vmtune, present, refused with context %}

{%- if refused %}

{#- init.sls renders the one refusal state. #}
include:
  - {{ tplroot }}
{%- elif not present %}

vmtune-pillar-absent-nothing-managed:
  test.show_notification:
    - text: "no vmtune key in this host's pillar: nothing managed"

{%- else %}

vmtune-sysctls-reverted:
  vmtune.reverted:
    - config: {{ vmtune.config | json }}
{%-   if vmtune.proc_root is not none %}
    - proc_root: {{ vmtune.proc_root | json }}
{%-   endif %}

{%-   if vmtune.beacon.enabled %}

vmtune-beacon-absent:
  beacon.absent:
    - name: vmtune
    - save: true
{%-   endif %}
{%- endif %}
