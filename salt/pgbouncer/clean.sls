{#- Undo init.sls: stop the service, remove the files, then the package.
    Without a `pgbouncer` pillar key: nothing, and a notification that says so. #}
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import mapdata, managed with context %}
include:
{%- if managed %}
{%-   if mapdata.manage_service %}
  - .service.clean
{%-   endif %}
  - .config.clean
  - .userlist.clean
{%-   if mapdata.manage_package %}
  - .package.clean
{%-   endif %}
{%- else %}
  - {{ tplroot }}
{%- endif %}
