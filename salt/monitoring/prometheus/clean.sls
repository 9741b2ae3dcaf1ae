{#- Remove opsalt's rules and file_sd files from the Prometheus host. -#}
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import mapdata, present with context %}
{%- if not present %}

include:
  - {{ tplroot }}.clean
{%- elif mapdata.prometheus.enabled %}

monitoring-prometheus-rules-file-absent:
  file.absent:
    - name: {{ salt['monitoring.rules_path']() | json }}

monitoring-prometheus-file-sd-absent:
  file.absent:
    - name: {{ salt['monitoring.file_sd_path']() | json }}
{%- else %}

monitoring-prometheus-nothing-to-clean:
  test.show_notification:
    - text: "monitoring:prometheus:enabled is false: nothing to clean"
{%- endif %}
