RUN echo no from
