{#- opsalt monitoring on this host: node_exporter configured for the
    incidents opsalt exists for, opsalt's textfile metrics on a Salt
    schedule and, on the Prometheus host, the alert rules and scrape
    targets. Pillar reaches this text only through `| json`; state IDs are
    fixed. -#}
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import present, refused with context %}
{%- if refused %}
{%-   include "opsalt/refusal.jinja" %}
{%- elif not present %}

monitoring-pillar-absent-nothing-managed:
  test.show_notification:
    - text: "no monitoring key in this host's pillar: nothing managed"
{%- else %}

include:
  - {{ tplroot }}.node_exporter
  - {{ tplroot }}.redis_exporter
  - {{ tplroot }}.textfile
  - {{ tplroot }}.prometheus
{%- endif %}
