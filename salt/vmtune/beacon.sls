{#- The vmtune beacon in the minion's beacons.conf, thresholds from pillar.
    No `vmtune` key in the pillar: nothing managed (vmtune's notification). #}
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import mapdata as vmtune, present with context %}
{%- set beacon = vmtune.beacon %}
{%- if not present %}

include:
  - {{ tplroot }}
{%- else %}

vmtune-beacon-present:
  beacon.present:
    - name: vmtune
    - save: true
    - interval: {{ beacon.interval | json }}
{%-   for key in ('direct_scan_rate', 'allocstall_rate', 'compact_stall_rate', 'load_per_cpu', 'rearm', 'top') %}
    - {{ key }}: {{ beacon[key] | json }}
{%-   endfor %}
{%-   if vmtune.proc_root is not none %}
    - proc_root: {{ vmtune.proc_root | json }}
{%-   endif %}
{%- endif %}
