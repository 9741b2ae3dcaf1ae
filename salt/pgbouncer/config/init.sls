{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import mapdata with context %}
include:
  - {{ tplroot }}.userlist

pgbouncer-config-file-managed:
  pgbouncer.configured:
    - name: {{ mapdata.config_path }}
    - databases: {{ mapdata.databases | json }}
    - users: {{ mapdata.users | json }}
    - settings: {{ mapdata.settings | json }}
    - owner: {{ mapdata.owner | json }}
    - group: {{ mapdata.group | json }}
    - mode: "{{ mapdata.mode }}"
    - restart: {{ mapdata.restart | json }}
    - restart_timeout: {{ mapdata.restart_timeout }}
    - service: {{ (mapdata.service if mapdata.manage_service else None) | json }}
    - pidfile: {{ mapdata.pidfile | json }}
    - admin: {{ mapdata.admin | json }}
    - service_user: {{ mapdata.service_user | json }}
    - require:
      - pgbouncer: pgbouncer-userlist-file-managed
