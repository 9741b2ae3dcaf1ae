{#- Undo init.sls: stop the service, remove the files, then the package. #}
include:
  - .service.clean
  - .config.clean
  - .userlist.clean
  - .package.clean
