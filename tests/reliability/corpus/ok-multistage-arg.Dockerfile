ARG BASE=nbops/busybox
FROM $BASE AS build
RUN echo hi > /x
FROM nbops/busybox
COPY --from=build /x /x
