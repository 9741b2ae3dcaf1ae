{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import mapdata, managed with context %}
{%- if not managed %}
include:
  - {{ tplroot }}
{%- else %}
{#- file.absent checks no policy itself: remove only a path the operator policy allows. #}
{%-   set refused = salt['pgbouncer.path_refused'](mapdata.userlist_path, 'userlist_path') %}
{%-   if refused %}

pgbouncer-userlist-file-absent:
  test.fail_without_changes:
    - name: {{ refused | json }}
    - comment: {{ refused | json }}
{%-   else %}

pgbouncer-userlist-file-absent:
  file.absent:
    - name: {{ mapdata.userlist_path | json }}
{%-   endif %}
{%- endif %}
