{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import mapdata, managed with context %}
{%- if not managed %}
include:
  - {{ tplroot }}
{%- else %}
{#- file.absent checks no policy itself: remove only a path the operator policy allows. #}
{%-   set refused = salt['pgbouncer.path_refused'](mapdata.config_path, 'config_path') %}
{%-   if refused %}

pgbouncer-config-file-absent:
  test.fail_without_changes:
    - name: {{ refused | json }}
    - comment: {{ refused | json }}
{%-   else %}

pgbouncer-config-file-absent:
  file.absent:
    - name: {{ mapdata.config_path | json }}
{%-   endif %}
{%- endif %}
