{#- Stop writing opsalt's textfile metrics and remove the file. -#}
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import present with context %}
{%- if not present %}

include:
  - {{ tplroot }}.clean
{%- else %}

monitoring-textfile-schedule-absent:
  schedule.absent:
    - name: opsalt-monitoring-textfile
    - persist: True

monitoring-textfile-file-absent:
  file.absent:
    - name: {{ salt['monitoring.textfile_path']() | json }}
{%- endif %}
