{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import mapdata, managed with context %}
{%- if not managed %}
include:
  - {{ tplroot }}
{%- elif mapdata.manage_service %}
{#- service.dead checks no policy itself: stop only a service the operator policy allows. #}
{%-   set refused = salt['pgbouncer.name_refused'](mapdata.service, 'service') %}

pgbouncer-service-dead:
{%-   if refused %}
  test.fail_without_changes:
    - name: {{ refused | json }}
    - comment: {{ refused | json }}
{%-   else %}
  service.dead:
    - name: {{ mapdata.service | json }}
    - enable: false
{%-   endif %}
{%- else %}
{#- clean.sls includes this only when managed: applied alone, say why nothing happens. #}

pgbouncer-service-clean-not-managed-test-show-notification:
  test.show_notification:
    - text: "pgbouncer: manage_service is false in this host's pillar, so the service is not stopped"
{%- endif %}
