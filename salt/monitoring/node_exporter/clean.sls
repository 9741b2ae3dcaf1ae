{#- node_exporter's flags back to Debian's (an empty ARGS); the package stays. -#}
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import mapdata, present with context %}
{%- if not present %}

include:
  - {{ tplroot }}.clean
{%- elif mapdata.node_exporter.enabled %}

monitoring-node-exporter-config-file-back-to-debian:
  file.managed:
    - name: {{ salt['monitoring.node_exporter_defaults_file']() | json }}
    - contents: 'ARGS=""'
    - mode: '0644'
{%- else %}

monitoring-node-exporter-nothing-to-clean:
  test.show_notification:
    - text: "monitoring:node_exporter:enabled is false: nothing to clean"
{%- endif %}
