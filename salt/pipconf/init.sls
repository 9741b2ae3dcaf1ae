{#- pip.conf per scope, .pypirc per user, and kolla-build overrides, from the
    pillar key `pipconf` (docs/components/pipconf.rst).
    Pillar reaches this text only through `| json`, and only the scope names:
    every state reads its settings (credentials included) from the pillar at
    run time (`pillar: true`), so no secret is in the rendered SLS. State IDs
    are slugs from pipconf.state_id, never raw pillar text. -#}
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import mapdata, present, refused with context %}

{%- if refused %}
{%-   include "opsalt/refusal.jinja" %}
{%- elif not present %}

pipconf-pillar-absent-nothing-managed:
  test.show_notification:
    - text: "no pipconf key in this host's pillar: nothing managed"

{%- else %}

{%- for scope in mapdata.configs | sort %}

{{ salt['pipconf.state_id']('config', scope) | json }}:
  pipconf.managed:
    - name: {{ scope | json }}
    - pillar: true
{%- endfor %}

{%- for scope in mapdata.pypirc | sort %}

{{ salt['pipconf.state_id']('pypirc', scope) | json }}:
  pipconf.pypirc:
    - name: {{ scope | json }}
    - pillar: true
{%- endfor %}

{%- if mapdata.kolla.enabled is sameas true %}

pipconf-kolla-files-managed:
  pipconf.kolla:
    - name: kolla
    - pillar: true
{%- endif %}

{%- if not (mapdata.configs or mapdata.pypirc or mapdata.kolla.enabled is sameas true) %}

pipconf-nothing-listed:
  test.show_notification:
    - text: "pipconf lists no configs, pypirc or kolla: nothing managed"
{%- endif %}
{%- endif %}
