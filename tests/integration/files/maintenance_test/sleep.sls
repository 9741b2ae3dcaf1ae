{#- A maintenance state that takes a while: pillar maintenance_test:seconds (default 2). -#}
{%- set seconds = salt['pillar.get']('maintenance_test:seconds', 2) | int %}

maintenance-test-sleep:
  cmd.run:
    - name: sleep {{ seconds | json }}
