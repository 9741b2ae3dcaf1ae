{#- Stop writing opsalt's textfile metrics and remove the file. -#}

monitoring-textfile-schedule-absent:
  schedule.absent:
    - name: opsalt-monitoring-textfile
    - persist: True

monitoring-textfile-file-absent:
  file.absent:
    - name: {{ salt['monitoring.textfile_path']() | json }}
