{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import mapdata, managed with context %}
{%- from "opsalt/gate.jinja" import rollout_gate with context %}
{%- call rollout_gate('pgbouncer') %}
{%- if not managed %}
include:
  - {{ tplroot }}
{%- elif mapdata.manage_package %}
{#- pkg.installed checks no policy itself: install only a package the operator policy allows. #}
{%-   set refused = salt['pgbouncer.name_refused'](mapdata.pkg, 'pkg') %}

pgbouncer-package-installed:
{%-   if refused %}
  test.fail_without_changes:
    - name: {{ refused | json }}
    - comment: {{ refused | json }}
{%-   else %}
  pkg.installed:
    - name: {{ mapdata.pkg | json }}
{%-   endif %}
{%- else %}
{#- init.sls includes this only when managed: applied alone, say why nothing happens. #}

pgbouncer-package-not-managed-test-show-notification:
  test.show_notification:
    - text: "pgbouncer: manage_package is false in this host's pillar, so the package is not managed"
{%- endif %}
{%- endcall %}
