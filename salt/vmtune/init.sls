{#- vm.min_free_kbytes / vfs_cache_pressure / watermark_scale_factor, live and
    persisted, from the pillar key `vmtune`; the beacon when enabled. #}
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import mapdata as vmtune with context %}
{%- set tunables = {} %}
{%- for key in ('min_free_kbytes', 'burst_kb', 'vfs_cache_pressure', 'watermark_scale_factor', 'proc_root') %}
{%-   if vmtune[key] is not none %}
{%-     do tunables.update({key: vmtune[key]}) %}
{%-   endif %}
{%- endfor %}

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
{%-   for key, value in tunables | dictsort %}
    - {{ key }}: {{ value | json }}
{%-   endfor %}
{%- else %}
vmtune-nothing-to-tune-in-pillar:
  test.show_notification:
    - text: "pillar vmtune sets none of min_free_kbytes, vfs_cache_pressure, watermark_scale_factor"
{%- endif %}
