FROM nbops/busybox
RUN echo a \
    && echo b \
    # a comment inside a continuation
    && echo c
