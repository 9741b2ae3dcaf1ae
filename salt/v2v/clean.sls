{#- Remove the work root. Only local copies live there; the RBD images and
    the .bak originals are untouched (salt-run v2v.cleanup handles those). -#}
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import mapdata with context %}

v2v-work-root-directory-absent:
  file.absent:
    - name: {{ mapdata.work_root }}
