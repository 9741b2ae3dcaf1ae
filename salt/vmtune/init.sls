{#- vm.min_free_kbytes / vfs_cache_pressure / watermark_scale_factor, live and
    persisted, from the pillar key `vmtune`; the beacon when enabled.
    Pillar reaches this text only through `| json` and state IDs are fixed;
    the module validates config/proc_root and checks them, max_percent and
    allow_zero against the operator's policy (opsalt:policy, minion config).
    - no `vmtune` key in the pillar: nothing managed (one notification);
    - no tunable set: nothing to tune (one notification). proc_root and
      config say where, not what: they alone tune nothing. #}
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import mapdata as vmtune, present, refused with context %}
{%- set tunables = {} %}
{%- for key in ('min_free_kbytes', 'burst_kb', 'vfs_cache_pressure', 'watermark_scale_factor') %}
{%-   if vmtune[key] is not none %}
{%-     do tunables.update({key: vmtune[key]}) %}
{%-   endif %}
{%- endfor %}

{%- if refused %}
{%-   include "opsalt/refusal.jinja" %}
{%- elif not present %}

vmtune-pillar-absent-nothing-managed:
  test.show_notification:
    - text: "no vmtune key in this host's pillar: nothing managed"

{%- else %}

{%- if vmtune.beacon.enabled %}
include:
  - {{ tplroot }}.beacon
{%- endif %}

{%- if tunables %}

vmtune-sysctls-tuned:
  vmtune.tuned:
    - config: {{ vmtune.config | json }}
    - max_percent: {{ vmtune.max_percent | json }}
    - allow_zero: {{ vmtune.allow_zero | json }}
{%-   if vmtune.proc_root is not none %}
    - proc_root: {{ vmtune.proc_root | json }}
{%-   endif %}
{%-   for key, value in tunables | dictsort %}
    - {{ key }}: {{ value | json }}
{%-   endfor %}
{%- else %}

vmtune-nothing-to-tune-in-pillar:
  test.show_notification:
    - text: "pillar vmtune sets none of min_free_kbytes, vfs_cache_pressure, watermark_scale_factor: nothing to tune"
{%- endif %}
{%- endif %}
