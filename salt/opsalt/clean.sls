{#- The clean SLS of every opsalt component whose pillar key this host has,
    in the reverse of init.sls's order. -#}
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import mapdata with context %}
{%- set included = [] %}
{%- for component in mapdata.components | reverse %}
{%-   if component in pillar %}
{%-     do included.append(component ~ '.clean') %}
{%-   endif %}
{%- endfor %}

{%- if included %}
include:
{%-   for sls_name in included %}
  - {{ sls_name | json }}
{%-   endfor %}
{%- else %}

opsalt-clean-no-component-in-pillar:
  test.show_notification:
    - text: "the pillar of this host has no opsalt component key: nothing to clean"
{%- endif %}
