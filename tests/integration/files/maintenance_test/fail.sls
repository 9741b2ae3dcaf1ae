{#- A maintenance state that fails. -#}
maintenance-test-fail:
  test.fail_without_changes:
    - name: the maintenance step failed on purpose
