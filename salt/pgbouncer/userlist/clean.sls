{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import mapdata with context %}

pgbouncer-userlist-file-absent:
  file.absent:
    - name: {{ mapdata.userlist_path }}
