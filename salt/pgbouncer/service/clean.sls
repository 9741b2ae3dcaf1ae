{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import mapdata, managed with context %}
{%- if not managed %}
include:
  - {{ tplroot }}
{%- elif mapdata.manage_service %}

pgbouncer-service-dead:
  service.dead:
    - name: {{ mapdata.service | json }}
    - enable: false
{%- endif %}
