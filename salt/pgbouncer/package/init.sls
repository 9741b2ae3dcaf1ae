{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import mapdata, managed with context %}
{%- from "opsalt/gate.jinja" import rollout_gate with context %}
{%- call rollout_gate('pgbouncer') %}
{%- if not managed %}
include:
  - {{ tplroot }}
{%- elif mapdata.manage_package %}

pgbouncer-package-installed:
  pkg.installed:
    - name: {{ mapdata.pkg | json }}
{%- endif %}
{%- endcall %}
