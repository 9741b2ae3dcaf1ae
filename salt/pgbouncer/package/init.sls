{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import mapdata with context %}
{%- if mapdata.manage_package %}

pgbouncer-package-installed:
  pkg.installed:
    - name: {{ mapdata.pkg }}
{%- endif %}
