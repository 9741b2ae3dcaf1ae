{#- node_exporter: package, flags (vmstat fields of a reclaim storm,
    zoneinfo, textfile directory) in Debian's defaults file, service. -#}
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import mapdata, present with context %}
{%- set node = mapdata.node_exporter %}
{%- if not present %}

include:
  - {{ tplroot }}
{%- elif node.enabled %}
{%-   if node.install %}

monitoring-node-exporter-package-installed:
  pkg.installed:
    - name: prometheus-node-exporter
{%-   endif %}

monitoring-node-exporter-textfile-directory-managed:
  file.directory:
    - name: {{ salt['monitoring.textfile_directory']() | json }}
    - mode: '0755'
    - makedirs: True

monitoring-node-exporter-config-file-managed:
  file.managed:
    - name: {{ salt['monitoring.node_exporter_defaults_file']() | json }}
    - contents: {{ salt['monitoring.node_exporter_defaults']() | json }}
    - mode: '0644'
    - makedirs: True
{%-   if node.run_service %}

monitoring-node-exporter-service-running:
  service.running:
    - name: prometheus-node-exporter
    - enable: True
    - watch:
      - file: monitoring-node-exporter-config-file-managed
{%-   endif %}
{%- else %}

monitoring-node-exporter-not-managed:
  test.show_notification:
    - text: "monitoring:node_exporter:enabled is false: node_exporter not managed"
{%- endif %}
