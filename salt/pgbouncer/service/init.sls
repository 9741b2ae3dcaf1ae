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
    only keeps the service enabled and running. service.running checks no
    policy itself: run only a service the operator policy allows. #}
{%-   set refused = salt['pgbouncer.name_refused'](mapdata.service, 'service') %}
pgbouncer-service-running:
{%-   if refused %}
  test.fail_without_changes:
    - name: {{ refused | json }}
    - comment: {{ refused | json }}
{%-   else %}
  service.running:
    - name: {{ mapdata.service | json }}
    - enable: true
{%-   endif %}
    - require:
      - pgbouncer: pgbouncer-config-file-managed
{%- else %}
{#- init.sls includes this only when managed: applied alone, say why nothing happens. #}

pgbouncer-service-not-managed-test-show-notification:
  test.show_notification:
    - text: "pgbouncer: manage_service is false in this host's pillar, so the service is not managed"
{%- endif %}
{%- endcall %}
