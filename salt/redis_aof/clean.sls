{#- Hand every setting the pillar manages back to Redis's own default, live
    and in the config file. This turns AOF off where the pillar turned it on:
    the data stays (in memory and in the RDB/AOF files), but durability is
    back to the defaults. As in init.sls, each state reads its instance from
    the pillar at run time (no secret in this text) and state IDs carry only
    valid names. No `redis_aof` key in the pillar: nothing managed. #}
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import mapdata as redis_aof, present, refused, instance_name, instance_slug with context %}

{%- if refused %}

{#- init.sls renders the one refusal state. #}
include:
  - {{ tplroot }}
{%- elif not present %}

redis_aof-pillar-absent-nothing-managed:
  test.show_notification:
    - text: "no redis_aof key in this host's pillar: nothing managed"

{%- else %}
{%-   for key, instance in redis_aof.instances | dictsort %}

{{ ("redis_aof-" ~ instance_slug(key, loop.index) ~ "-aof-settings-back-to-redis-defaults") | json }}:
  redis_aof.configured:
    - name: {{ instance_name(instance) | json }}
    - pillar_instance: {{ key | json }}
    - back_to_defaults: true
{%-   else %}

redis_aof-no-instance-to-clean:
  test.show_notification:
    - text: "pillar redis_aof:instances lists no Redis instance: nothing managed"
{%-   endfor %}
{%- endif %}
