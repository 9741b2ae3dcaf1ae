{#- Undo the monitoring SLS: the schedule entry, opsalt's textfile, the
    rules and file_sd files, and node_exporter's flags back to Debian's. -#}
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import present, refused with context %}
{%- if refused %}

{#- init.sls renders the one refusal state. #}
include:
  - {{ tplroot }}
{%- elif not present %}

monitoring-pillar-absent-nothing-cleaned:
  test.show_notification:
    - text: "no monitoring key in this host's pillar: nothing to clean"
{%- else %}

include:
  - {{ tplroot }}.textfile.clean
  - {{ tplroot }}.prometheus.clean
  - {{ tplroot }}.node_exporter.clean
  - {{ tplroot }}.redis_exporter.clean
{%- endif %}
