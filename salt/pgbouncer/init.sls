{#- pgbouncer: package, userlist, config (validated, safe reload), service.
    Without a `pgbouncer` pillar key: nothing, and a notification that says so. #}
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import mapdata, managed, refused with context %}
{%- if managed %}
{#- package and service only when managed: applied alone, they say they are not. #}
include:
{%-   if mapdata.manage_package %}
  - .package
{%-   endif %}
  - .userlist
  - .config
{%-   if mapdata.manage_service %}
  - .service
{%-   endif %}
{%- elif refused %}
{%-   include "opsalt/refusal.jinja" %}
{%- else %}

pgbouncer-not-managed-test-show-notification:
  test.show_notification:
    - text: "pgbouncer: this host's pillar has no 'pgbouncer' key, so nothing is managed"
{%- endif %}
