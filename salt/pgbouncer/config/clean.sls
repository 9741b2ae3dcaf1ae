{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import mapdata with context %}

pgbouncer-config-file-absent:
  file.absent:
    - name: {{ mapdata.config_path }}
