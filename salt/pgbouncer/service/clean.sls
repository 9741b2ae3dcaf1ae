{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import mapdata with context %}
{%- if mapdata.manage_service %}

pgbouncer-service-dead:
  service.dead:
    - name: {{ mapdata.service }}
    - enable: false
{%- endif %}
