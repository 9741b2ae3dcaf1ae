{#- pgbouncer: package, userlist, config (validated, safe reload), service. #}
include:
  - .package
  - .userlist
  - .config
  - .service
