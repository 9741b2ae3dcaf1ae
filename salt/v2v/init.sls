{#- Prepare a conversion host: the work root, and a report of the migration tools. -#}
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import mapdata with context %}

v2v-work-root-directory-managed:
  file.directory:
    - name: {{ mapdata.work_root }}
    - mode: '0700'
    - makedirs: True

{%- set found = salt['v2v.tools'](mapdata.required_tools) %}
{%- set missing = found | dictsort | selectattr('1.found', 'false') | map(attribute='0') | list %}

v2v-conversion-tools-present:
  test.configurable_test_state:
    - changes: False
    - result: {{ missing | length == 0 }}
    - comment: >-
        {%- if missing %}
        missing: {{ missing | join(', ') }}; install them (virt-v2v, nbdkit, ceph-common,
        libvirt-clients) or point v2v:tools:<name> at them
        {%- else %}
        {{ mapdata.required_tools | join(', ') }} present
        {%- endif %}
