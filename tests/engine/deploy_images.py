"""Test images for deploy tests: a busybox httpd with a fast HEALTHCHECK (good) or one that never passes."""

from __future__ import annotations

import io

WEB = """FROM nbops/busybox:latest
RUN mkdir -p /www && echo {version} > /www/index.html
HEALTHCHECK --interval=1s --timeout=3s --retries=3 CMD {check}
EXPOSE 8080
CMD ["httpd", "-f", "-p", "8080", "-h", "/www"]
"""
GOOD = "printf 'GET / HTTP/1.0\\\\r\\\\n\\\\r\\\\n' | nc -w 2 127.0.0.1 8080 | grep -q 200"
BAD = "exit 1"


def build_web(engine, registry: str, version: str, *, healthy: bool = True) -> str:
    """Build and push ``REGISTRY/nbt/web:VERSION``; returns the pushed reference."""
    ref = f"{registry}/nbt/web:{version}"
    text = WEB.format(version=version, check=GOOD if healthy else BAD)
    engine.client.images.build(fileobj=io.BytesIO(text.encode()), tag=ref, forcerm=True, rm=True)
    for chunk in engine.client.api.push(ref, stream=True, decode=True):
        if "error" in chunk:
            raise RuntimeError(chunk["error"])
    return ref
