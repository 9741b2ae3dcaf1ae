{#- pgbouncer: package, userlist, config (validated, safe reload), service.
    Without a `pgbouncer` pillar key: nothing, and a notification that says so. #}
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import managed with context %}
{%- if managed %}
include:
  - .package
  - .userlist
  - .config
  - .service
{%- else %}

pgbouncer-not-managed-test-show-notification:
  test.show_notification:
    - text: "pgbouncer: this host's pillar has no 'pgbouncer' key, so nothing is managed"
{%- endif %}
