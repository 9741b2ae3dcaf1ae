{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import mapdata with context %}
include:
  - {{ tplroot }}.package

pgbouncer-userlist-file-managed:
  pgbouncer.userlist:
    - name: {{ mapdata.userlist_path }}
    - users: {{ mapdata.userlist | json }}
    - auth_type: {{ mapdata.settings.get('auth_type', 'md5') }}
    - method: {{ mapdata.userlist_method | json }}
    - owner: {{ mapdata.owner | json }}
    - group: {{ mapdata.group | json }}
    - mode: "{{ mapdata.mode }}"
    - iterations: {{ mapdata.scram_iterations }}
    - verifier_from: {{ mapdata.verifier_from | json }}
    - service: {{ (mapdata.service if mapdata.manage_service else None) | json }}
    - pidfile: {{ mapdata.pidfile | json }}
    - admin: {{ mapdata.admin | json }}
{%- if mapdata.manage_package %}
    - require:
      - pkg: pgbouncer-package-installed
{%- endif %}
