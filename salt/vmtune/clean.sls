{#- Stop managing: remove the persisted sysctl.d file (and the beacon if the
    pillar enables it). Live values stay until reboot or the next change. #}
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import mapdata as vmtune with context %}

vmtune-config-file-absent:
  file.absent:
    - name: {{ vmtune.config | json }}

{%- if vmtune.beacon.enabled %}

vmtune-beacon-absent:
  beacon.absent:
    - name: vmtune
    - save: true
{%- endif %}
