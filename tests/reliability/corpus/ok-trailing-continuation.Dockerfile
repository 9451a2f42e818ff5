FROM nbops/busybox
RUN echo dangling \