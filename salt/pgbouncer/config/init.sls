{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import mapdata, managed, console with context %}
{%- from "opsalt/gate.jinja" import rollout_gate with context %}
{%- call rollout_gate('pgbouncer') %}
include:
{%- if managed %}
  - {{ tplroot }}.userlist

{#- databases (connection strings may hold passwords) come from pillar at run time. #}
pgbouncer-config-file-managed:
  pgbouncer.configured:
    - name: {{ mapdata.config_path | json }}
    - pillar_key: pgbouncer
    - userlist_path: {{ mapdata.userlist_path | json }}
    - users: {{ mapdata.users | json }}
    - settings: {{ mapdata.settings | json }}
    - user: {{ mapdata.user | json }}
    - owner: {{ mapdata.get('owner') | json }}
    - group: {{ mapdata.group | json }}
    - mode: {{ mapdata.mode | string | json }}
    - restart: {{ mapdata.restart | json }}
    - restart_timeout: {{ mapdata.restart_timeout | json }}
    - service: {{ (mapdata.service if mapdata.manage_service else None) | json }}
    - pidfile: {{ mapdata.pidfile | json }}
    - admin: {{ console | json }}
    - service_user: {{ mapdata.service_user | json }}
    - allow_empty: {{ mapdata.allow_empty | json }}
    - require:
      - pgbouncer: pgbouncer-userlist-file-managed
{%- else %}
  - {{ tplroot }}
{%- endif %}
{%- endcall %}
