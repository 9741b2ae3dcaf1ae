{#- Undo init.sls: stop the service, remove the files, then the package.
    Without a `pgbouncer` pillar key: nothing, and a notification that says so. #}
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import managed with context %}
include:
{%- if managed %}
  - .service.clean
  - .config.clean
  - .userlist.clean
  - .package.clean
{%- else %}
  - {{ tplroot }}
{%- endif %}
