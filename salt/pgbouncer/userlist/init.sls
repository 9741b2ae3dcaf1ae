{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import mapdata, managed, console with context %}
{%- from "opsalt/gate.jinja" import rollout_gate with context %}
{%- call rollout_gate('pgbouncer') %}
{%- if managed %}
{%-   if mapdata.manage_package %}
include:
  - {{ tplroot }}.package
{%-   endif %}

{#- The users and their passwords (and verifier_from) come from pillar at run time. #}
pgbouncer-userlist-file-managed:
  pgbouncer.userlist:
    - name: {{ mapdata.userlist_path | json }}
    - pillar_key: pgbouncer
    - auth_type: {{ mapdata.settings.get('auth_type', 'md5') | json }}
    - method: {{ mapdata.userlist_method | json }}
    - user: {{ mapdata.user | json }}
    - owner: {{ mapdata.get('owner') | json }}
    - group: {{ mapdata.group | json }}
    - mode: {{ mapdata.mode | string | json }}
    - iterations: {{ mapdata.scram_iterations | json }}
    - service: {{ (mapdata.service if mapdata.manage_service else None) | json }}
    - pidfile: {{ mapdata.pidfile | json }}
    - admin: {{ console | json }}
    - allow_empty: {{ mapdata.allow_empty | json }}
{#- required by ID: a package the policy refuses is a test state of that ID #}
{%- if mapdata.manage_package %}
    - require:
      - pgbouncer-package-installed
{%- endif %}
{%- else %}
include:
  - {{ tplroot }}
{%- endif %}
{%- endcall %}
