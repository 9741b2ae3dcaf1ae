{#- The team's Prometheus host: opsalt's alert rules (checked with
    `promtool check rules` before Prometheus reloads them, put back when the
    check fails) and the file_sd targets of the exporters. -#}
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import mapdata, present with context %}
{%- if not present %}

include:
  - {{ tplroot }}
{%- elif mapdata.prometheus.enabled %}

monitoring-prometheus-file-sd-managed:
  file.managed:
    - name: {{ salt['monitoring.file_sd_path']() | json }}
    - contents: {{ salt['monitoring.scrape_targets']() | json }}
    - mode: '0644'
    - makedirs: True

monitoring-prometheus-rules-file-managed:
  monitoring.rules_managed:
    - name: {{ mapdata.rules.path | json }}
{%- else %}

monitoring-prometheus-not-this-host:
  test.show_notification:
    - text: "monitoring:prometheus:enabled is false: no rules or scrape targets here"
{%- endif %}
