FROM nbops/busybox
FROBNICATE x
