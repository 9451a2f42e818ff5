FROM nbops/busybox
RUN <<EOF
echo hi
EOF
