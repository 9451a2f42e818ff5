FROM nbops/busybox
RUN echo a \
 && echo b
CMD ["sh"]
