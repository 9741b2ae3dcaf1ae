{#- Prepare a conversion host: the work root, and a check of the migration
    tools. Pillar reaches this text only through `| json`; state IDs are fixed.
    - no `v2v` key in the pillar: nothing managed (one notification);
    - `v2v:conversion_host: false`: not a conversion host, nothing managed,
      the notification says which tools are missing (the demo uses this);
    - otherwise a missing tool fails the run. -#}
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import mapdata, present, refused with context %}

{%- if refused %}
{%-   include "opsalt/refusal.jinja" %}
{%- elif not present %}

v2v-pillar-absent-nothing-managed:
  test.show_notification:
    - text: "no v2v key in this host's pillar: nothing managed"

{%- else %}
{%- set found = salt['v2v.tools'](mapdata.required_tools) %}
{%- set missing = found | dictsort | selectattr('1.found', 'false') | map(attribute='0') | list %}
{%- if mapdata.conversion_host is sameas false %}

v2v-not-a-conversion-host:
  test.show_notification:
    - text: {{ ('skipped: not a conversion host (' ~ ('missing ' ~ missing | join(', ') if missing else 'all tools present') ~ ')') | json }}

{%- else %}

include:
  - {{ tplroot }}.work_root

v2v-work-root-directory-managed:
  file.directory:
    - name: {{ salt['v2v.work_root_verdict'](mapdata.work_root).path | json }}
    - mode: '0700'
    - makedirs: True
    - require:
      - test: v2v-work-root-allowed

v2v-conversion-tools-present:
  test.configurable_test_state:
    - changes: False
    - result: {{ (missing | length == 0) | json }}
    - comment: {{ ('missing: ' ~ missing | join(', ') ~ '; install them (virt-v2v, nbdkit, ceph-common, libvirt-clients) or point v2v:tools:<name> at them' if missing else mapdata.required_tools | join(', ') ~ ' present') | json }}
    - allow_test_mode_failure: True
{%- endif %}
{%- endif %}
