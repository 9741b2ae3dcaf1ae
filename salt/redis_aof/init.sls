{#- AOF settings of every Redis instance in the pillar key `redis_aof`, live
    (CONFIG SET, no restart) and persisted (CONFIG REWRITE). #}
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import mapdata as redis_aof, instance_name with context %}

{%- for id, instance in redis_aof.instances | dictsort %}
{%-   set settings = dict(redis_aof.settings or {}) %}
{%-   do settings.update(instance.get('settings') or {}) %}

redis_aof-{{ id }}-aof-settings-configured:
  redis_aof.configured:
    - name: {{ instance_name(instance) | json }}
{%-   for key in ('username', 'password', 'ssl') %}
{%-     if instance.get(key) is not none %}
    - {{ key }}: {{ instance[key] | json }}
{%-     endif %}
{%-   endfor %}
    - persist: {{ instance.get('persist', redis_aof.persist) | json }}
    - wait_timeout: {{ instance.get('wait_timeout', redis_aof.wait_timeout) | json }}
{%-   for key, value in settings | dictsort %}
    - {{ key }}: {{ value | json }}
{%-   endfor %}
{%- else %}

redis_aof-no-instance-in-pillar:
  test.show_notification:
    - text: "pillar redis_aof:instances lists no Redis instance"
{%- endfor %}
