{#- Hand every setting the pillar manages back to Redis's own default, live
    and in the config file. This turns AOF off where the pillar turned it on:
    the data stays (in memory and in the RDB/AOF files), but durability is
    back to the defaults. #}
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import mapdata as redis_aof, instance_name with context %}
{%- set redis_defaults = salt['redis_aof.defaults']() %}

{%- for id, instance in redis_aof.instances | dictsort %}
{%-   set managed = dict(redis_aof.settings or {}) %}
{%-   do managed.update(instance.get('settings') or {}) %}

redis_aof-{{ id }}-aof-settings-back-to-redis-defaults:
  redis_aof.configured:
    - name: {{ instance_name(instance) | json }}
{%-   for key in ('username', 'password', 'ssl') %}
{%-     if instance.get(key) is not none %}
    - {{ key }}: {{ instance[key] | json }}
{%-     endif %}
{%-   endfor %}
    - persist: {{ instance.get('persist', redis_aof.persist) | json }}
{%-   for key in managed | sort %}
    - {{ key }}: {{ redis_defaults.get(key | replace('_', '-'), managed[key]) | json }}
{%-   endfor %}
{%- else %}

redis_aof-no-instance-to-clean:
  test.show_notification:
    - text: "pillar redis_aof:instances lists no Redis instance"
{%- endfor %}
