{#- Every opsalt component whose pillar key this host has, in a safe order
    (defaults.yaml). A host whose asset record lacks a component's key gets
    nothing of that component. Component names come from defaults.yaml, so no
    pillar text reaches the include list. -#}
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import mapdata with context %}
{%- set included = [] %}
{%- for component in mapdata.components %}
{%-   if component in pillar %}
{%-     do included.append(component) %}
{%-   endif %}
{%- endfor %}

{%- if included %}
include:
{%-   for component in included %}
  - {{ component | json }}
{%-   endfor %}
{%- else %}

opsalt-no-component-in-pillar:
  test.show_notification:
    - text: "the pillar of this host has no opsalt component key: nothing to manage"
{%- endif %}
