{#- pip.conf per scope, .pypirc per user, and kolla-build overrides, from the
    pillar key `pipconf` (see README.rst, section pipconf). -#}
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import mapdata with context %}

{%- for scope, config in mapdata.configs | dictsort %}

pipconf-{{ scope }}-config-file-managed:
  pipconf.managed:
    - name: {{ scope | json }}
    - settings: {{ config.get('settings', {}) | json }}
    - exclusive: {{ config.get('exclusive', False) | json }}
{%-   for key in ('mode', 'user', 'group') %}
{%-     if config.get(key) is not none %}
    - {{ key }}: {{ config[key] | string | json }}
{%-     endif %}
{%-   endfor %}
{%- endfor %}

{%- for scope, pypirc in mapdata.pypirc | dictsort %}

pipconf-{{ scope }}-pypirc-file-managed:
  pipconf.pypirc:
    - name: {{ scope | json }}
    - repositories: {{ pypirc.get('repositories', {}) | json }}
{%- endfor %}

{%- set kolla = mapdata.kolla %}
{%- if kolla.enabled %}

pipconf-kolla-config-dir-present:
  file.directory:
    - name: {{ kolla.config_dir | json }}
    - makedirs: True

pipconf-kolla-template-override-file-managed:
  file.managed:
    - name: {{ kolla.template_override | json }}
    - contents: {{ salt['pipconf.render_kolla_header'](kolla.pip, kolla.image_pip_conf) | json }}
    {#- The header carries the index URL, credentials included (base64). #}
    - mode: "0600"
    - show_changes: False
    - makedirs: True
    - require:
      - file: pipconf-kolla-config-dir-present

pipconf-kolla-build-conf-file-managed:
  file.managed:
    - name: {{ kolla.build_conf | json }}
    - contents: {{ salt['pipconf.render_kolla_conf'](kolla.sources, kolla.options, kolla.template_override) | json }}
    - mode: "0644"
    - makedirs: True
    - require:
      - file: pipconf-kolla-template-override-file-managed
{%- endif %}
