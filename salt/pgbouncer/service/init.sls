{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import mapdata, managed with context %}
{%- from "opsalt/gate.jinja" import rollout_gate with context %}
{%- call rollout_gate('pgbouncer') %}
{%- if not managed %}
include:
  - {{ tplroot }}
{%- elif mapdata.manage_service %}
include:
  - {{ tplroot }}.config

{#- Reloads and restarts are the config state's job (validated first); this
    only keeps the service enabled and running. #}
pgbouncer-service-running:
  service.running:
    - name: {{ mapdata.service | json }}
    - enable: true
    - require:
      - pgbouncer: pgbouncer-config-file-managed
{%- endif %}
{%- endcall %}
