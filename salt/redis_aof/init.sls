{#- AOF settings of every Redis instance in the pillar key `redis_aof`, live
    (CONFIG SET, no restart) and persisted (CONFIG REWRITE).
    Each state gets only the instance's pillar key (`pillar_instance`) and
    reads the address, password and settings from the pillar at run time:
    no secret passes through this text, and pillar reaches it only through
    `| json`. State IDs carry an instance key only when it is a valid name.
    No `redis_aof` key in the pillar: nothing managed. #}
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import mapdata as redis_aof, present, refused, instance_name, instance_slug with context %}
{%- from "opsalt/gate.jinja" import rollout_gate with context %}
{%- call rollout_gate('redis_aof') %}

{%- if refused %}
{%-   include "opsalt/refusal.jinja" %}
{%- elif not present %}

redis_aof-pillar-absent-nothing-managed:
  test.show_notification:
    - text: "no redis_aof key in this host's pillar: nothing managed"

{%- else %}
{%-   for key, instance in redis_aof.instances | dictsort %}

{{ ("redis_aof-" ~ instance_slug(key, loop.index) ~ "-aof-settings-configured") | json }}:
  redis_aof.configured:
    - name: {{ instance_name(instance) | json }}
    - pillar_instance: {{ key | json }}
{%-   else %}

redis_aof-no-instance-in-pillar:
  test.show_notification:
    - text: "pillar redis_aof:instances lists no Redis instance: nothing managed"
{%-   endfor %}
{%- endif %}
{%- endcall %}
