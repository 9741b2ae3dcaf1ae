{#- One redis_exporter per redis_aof instance: the package, environment
    files (read from the pillar by the state at run time: the password never
    passes through SLS text), a systemd template unit, the services. -#}
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import mapdata, present with context %}
{%- set exporter = mapdata.redis_exporter %}
{%- if not present %}

include:
  - {{ tplroot }}
{%- elif exporter.enabled and salt['pillar.get']('redis_aof:instances') %}
{%-   if exporter.install %}

monitoring-redis-exporter-package-installed:
  pkg.installed:
    - name: prometheus-redis-exporter
{%-   endif %}
{%-   if exporter.run_service %}

{#- Debian's package enables its own single exporter (ARGS="" in
    /etc/default/prometheus-redis-exporter: every interface, port 9121, the
    Redis on localhost:6379). It would hold the port of the first instance's
    exporter below and scrape a Redis opsalt does not manage. #}
monitoring-redis-exporter-debian-default-service-dead:
  service.dead:
    - name: prometheus-redis-exporter
    - enable: False
{%-   endif %}

monitoring-redis-exporter-config-files-managed:
  monitoring.redis_exporters_managed:
    - name: redis_exporter environment files
{%-   if exporter.run_service %}

monitoring-redis-exporter-unit-file-managed:
  file.managed:
    - name: /etc/systemd/system/prometheus-redis-exporter@.service
    - source: salt://{{ tplroot }}/redis_exporter/files/prometheus-redis-exporter@.service
    - mode: '0644'

monitoring-redis-exporter-services-running:
  service.running:
    - names: {{ salt['monitoring.redis_exporter_units']() | json }}
    - enable: True
    - watch:
      - monitoring: monitoring-redis-exporter-config-files-managed
      - file: monitoring-redis-exporter-unit-file-managed
{%-   endif %}
{%- else %}

monitoring-redis-exporter-not-managed:
  test.show_notification:
    - text: "no redis_aof instance in the pillar or monitoring:redis_exporter:enabled is false: no redis_exporter managed"
{%- endif %}
