{#- Undo init.sls: remove the options the pillar set (the rest of each pip.conf
    stays; a file managed with exclusive: true goes), the .pypirc files and
    the kolla files. Same rules as init.sls: names through `| json`, slugged
    IDs, settings read by the state at run time. -#}
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import mapdata, present, refused with context %}

{%- if refused %}

{#- init.sls renders the one refusal state. #}
include:
  - {{ tplroot }}
{%- elif not present %}

pipconf-clean-pillar-absent-nothing-removed:
  test.show_notification:
    - text: "no pipconf key in this host's pillar: nothing removed"

{%- else %}

{%- for scope, config in mapdata.configs | dictsort %}
{%-   if config.get('exclusive') is sameas true %}

{{ salt['pipconf.state_id']('configabsent', scope) | json }}:
  pipconf.absent:
    - name: {{ scope | json }}
    - kind: config
{%-   else %}

{{ salt['pipconf.state_id']('optionsabsent', scope) | json }}:
  pipconf.options_absent:
    - name: {{ scope | json }}
    - pillar: true
{%-   endif %}
{%- endfor %}

{%- for scope in mapdata.pypirc | sort %}

{{ salt['pipconf.state_id']('pypircabsent', scope) | json }}:
  pipconf.absent:
    - name: {{ scope | json }}
    - kind: pypirc
{%- endfor %}

{%- if mapdata.kolla.enabled is sameas true %}

pipconf-kolla-template-override-absent:
  pipconf.absent:
    - name: {{ mapdata.kolla.template_override | json }}
    - kind: kolla

pipconf-kolla-build-conf-absent:
  pipconf.absent:
    - name: {{ mapdata.kolla.build_conf | json }}
    - kind: kolla
{%- endif %}
{%- endif %}
