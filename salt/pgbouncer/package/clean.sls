{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import mapdata, managed with context %}
{%- if not managed %}
include:
  - {{ tplroot }}
{%- elif mapdata.manage_package %}
{#- pkg.removed checks no policy itself: remove only a package the operator policy allows. #}
{%-   set refused = salt['pgbouncer.name_refused'](mapdata.pkg, 'pkg') %}

pgbouncer-package-removed:
{%-   if refused %}
  test.fail_without_changes:
    - name: {{ refused | json }}
    - comment: {{ refused | json }}
{%-   else %}
  pkg.removed:
    - name: {{ mapdata.pkg | json }}
{%-   endif %}
{%- else %}
{#- clean.sls includes this only when managed: applied alone, say why nothing happens. #}

pgbouncer-package-clean-not-managed-test-show-notification:
  test.show_notification:
    - text: "pgbouncer: manage_package is false in this host's pillar, so the package is not removed"
{%- endif %}
