{#- Stop writing redis_exporter environment files: remove the directory.
    The package stays, as node_exporter's does. -#}
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import present with context %}
{%- if not present %}

include:
  - {{ tplroot }}.clean
{%- else %}

monitoring-redis-exporter-config-files-absent:
  file.absent:
    - name: {{ salt['monitoring.redis_exporter_config_dir']() | json }}
{%- endif %}
