FROM nbops/busybox
RUN true
