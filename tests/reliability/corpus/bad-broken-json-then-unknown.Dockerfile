FROM nbops/busybox
RUN ["echo", "unterminated
CMD ["sh"
FROBNICATE
