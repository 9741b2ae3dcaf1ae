{#- Undo init.sls: remove the options the pillar set (the rest of each pip.conf
    stays; a file managed with exclusive: true goes), the .pypirc files and
    the kolla files. -#}
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import mapdata with context %}

{%- for scope, config in mapdata.configs | dictsort %}
{%-   if config.get('exclusive') %}

pipconf-{{ scope }}-config-file-absent:
  file.absent:
    - name: {{ salt['pipconf.resolve'](scope).path | json }}
{%-   else %}
{%-     set removals = {} %}
{%-     for section, options in config.get('settings', {}).items() %}
{%-       do removals.update({section: {}}) %}
{%-       for option in options %}
{%-         do removals[section].update({option: none}) %}
{%-       endfor %}
{%-     endfor %}

pipconf-{{ scope }}-config-options-absent:
  pipconf.managed:
    - name: {{ scope | json }}
    - settings: {{ removals | json }}
{%-   endif %}
{%- endfor %}

{%- for scope in mapdata.pypirc %}

pipconf-{{ scope }}-pypirc-file-absent:
  file.absent:
    - name: {{ salt['pipconf.prepare_pypirc'](scope, mapdata.pypirc[scope].repositories).path | json }}
{%- endfor %}

{%- if mapdata.kolla.enabled %}

pipconf-kolla-template-override-file-absent:
  file.absent:
    - name: {{ mapdata.kolla.template_override | json }}

pipconf-kolla-build-conf-file-absent:
  file.absent:
    - name: {{ mapdata.kolla.build_conf | json }}
{%- endif %}
