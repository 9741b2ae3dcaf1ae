{#- opsalt's textfile metrics: a Salt schedule entry that runs
    monitoring.write_textfile every `interval` seconds (the state run itself
    writes nothing, so the file's age shows the schedule is alive). -#}
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import mapdata, present with context %}
{%- set textfile = mapdata.textfile %}
{%- if not present %}

include:
  - {{ tplroot }}
{%- elif textfile.enabled %}

monitoring-textfile-schedule-present:
  schedule.present:
    - name: opsalt-monitoring-textfile
    - function: monitoring.write_textfile
    - seconds: {{ salt['monitoring.schedule_interval']() | json }}
    - return_job: False
    - persist: True
{%- else %}

monitoring-textfile-schedule-absent:
  schedule.absent:
    - name: opsalt-monitoring-textfile
    - persist: True
{%- endif %}
