"""Push and build faults against a real lab of this module's own.

* A slow registry: a throttling TCP proxy started by the test on the lab gateway (the lab engines
  trust the lab subnet as insecure registries) forwards to the lab registry at a few hundred kB/s
  and stalls mid-stream: a push either completes (and reports its slow throughput) or stops at its
  timeout with one error naming the registry; the history store matches what the registry holds.
* A push interrupted like a kernel interrupt (SIGINT to an IPython shell running ``%push``): the
  engine stops pushing, the display is closed, no row says it succeeded, the next push works.
* An engine that hangs after a build started (SIGSTOP mid-build): the build's stall watchdog stops it
  with one EngineHung error; a healthy but silent step (``RUN sleep``) runs to its end.
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

pytestmark = [pytest.mark.engine, pytest.mark.slow]

MB = 1 << 20


# -- a throttling proxy the test owns ---------------------------------------------------------------
class Proxy:
    """TCP proxy on ``host`` (the lab gateway, a free port) to ``upstream`` (the lab registry).

    Uploads (engine → registry) go at ``rate`` bytes/s (None: full speed); once ``stall_after`` bytes
    went through they stop for ``stall_for`` seconds (None: until :meth:`resume`). Downloads (the
    registry's answers) are never held. Counts the bytes it forwarded upstream.
    """

    def __init__(self, host: str, upstream: tuple[str, int], *, rate: float | None = None,
                 stall_after: int | None = None, stall_for: float | None = None) -> None:
        self.upstream = upstream
        self.rate, self.stall_after, self.stall_for = rate, stall_after, stall_for
        self.uploaded = 0
        self.stalls = 0
        self.stalled_s = 0.0
        self._t_stall = 0.0
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self.server = socket.create_server((host, 0))
        self.server.settimeout(0.5)
        self.address = f"{host}:{self.server.getsockname()[1]}"
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self.server.accept()
            except OSError:  # timeout, or closed
                continue
            try:
                up = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                client.close()
                continue
            client.settimeout(None)
            up.settimeout(None)
            with self._lock:
                self._socks += [client, up]
            threading.Thread(target=self._pump, args=(client, up, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, upload: bool) -> None:
        try:
            while not self._closed.is_set():
                rate = self.rate if upload else None
                data = src.recv(max(1024, int(rate / 20)) if rate else 65536)
                if not data:
                    break
                if upload:
                    if rate:
                        time.sleep(len(data) / rate)
                    self._maybe_stall()
                    while not self._flowing.wait(0.2):
                        if self._closed.is_set():
                            return
                dst.sendall(data)
                if upload:
                    with self._lock:
                        self.uploaded += len(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _maybe_stall(self) -> None:
        with self._lock:
            if self.stall_after is None or self.uploaded < self.stall_after:
                return
            self.stall_after = None
            self.stalls += 1
            self._t_stall = time.monotonic()
            self._flowing.clear()
        if self.stall_for is not None:
            timer = threading.Timer(self.stall_for, self.resume)
            timer.daemon = True
            timer.start()

    def resume(self, *, rate: float | None | str = "same") -> None:
        """Let uploads flow again (at ``rate`` if given; None: full speed)."""
        if rate != "same":
            self.rate = rate  # type: ignore[assignment]
        with self._lock:
            if not self._flowing.is_set():
                self.stalled_s += time.monotonic() - self._t_stall
                self._flowing.set()

    def wait_quiet(self, quiet: float = 3.0, timeout: float = 40.0) -> int:
        """Wait until no upload byte moved for ``quiet`` s (bounded); return the bytes uploaded."""
        deadline = time.monotonic() + timeout
        last, since = self.uploaded, time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.25)
            if self.uploaded != last:
                last, since = self.uploaded, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return last
        raise AssertionError(f"uploads through the proxy never stopped ({self.uploaded} bytes in {timeout:.0f} s)")

    def close(self) -> None:
        self._closed.set()
        self._flowing.set()
        self.server.close()
        with self._lock:
            for s in self._socks:
                try:
                    s.close()
                except OSError:
                    pass


# -- fixtures --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def plab(helpers):
    lab = helpers.start_lab(nodes=1)
    yield lab
    helpers.stop_lab(lab)


@pytest.fixture(scope="module")
def node(plab):
    return plab.state().nodes[0]


@pytest.fixture
def engine_at(node):
    """``engine_at(timeout)``: an Engine on the lab node with that client timeout (closed afterwards)."""
    from nbops.engine import Engine

    opened = []

    def connect(timeout: float):
        eng = Engine.connect(node.socket, timeout=timeout)
        opened.append(eng)
        return eng

    yield connect
    for eng in opened:
        eng.client.close()


@pytest.fixture
def proxy_to_registry(plab):
    """``proxy_to_registry(**kw)``: a :class:`Proxy` on the lab gateway to the lab registry (closed afterwards)."""
    st = plab.state()
    host, port = st.registry.rsplit(":", 1)
    made = []

    def make(**kw) -> Proxy:
        p = Proxy(st.gateway, (host, int(port)), **kw)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


def _fresh_image(eng, mb: int) -> str:
    """An image with a new ``mb`` MB random layer (never in the registry yet)."""
    from nbops.build import build

    tag = f"rel/blob{mb}:{uuid.uuid4().hex[:8]}"
    build(f"FROM nbops/busybox\nRUN dd if=/dev/urandom of=/blob bs=1M count={mb} 2>/dev/null\n", [tag], engine=eng,
          nocache=True, progress="none")
    return tag


def _registry_digest(registry: str, repo: str, tag: str) -> str | None:
    """What the lab registry itself serves for repo:tag (asked directly, not through the proxy)."""
    req = urllib.request.Request(f"http://{registry}/v2/{repo}/manifests/{tag}", method="HEAD",
                                 headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.headers.get("Docker-Content-Digest")
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def _push_rows(ref: str) -> list[tuple]:
    from nbops import history

    return history.default().execute("SELECT ok, digest, error, bytes_sent FROM pushes WHERE ref=? ORDER BY id", (ref,))


def _split(ref: str) -> tuple[str, str]:
    """(repo without the registry, tag) of ``REGISTRY/REPO:TAG``."""
    path = ref.split("/", 1)[1]
    repo, tag = path.rsplit(":", 1)
    return repo, tag


# -- 1. a slow registry: the push completes and reports its throughput --------------------------------
def test_slow_registry_push_completes(plab, engine_at, proxy_to_registry, figures, capsys):
    from nbops import distribute

    st = plab.state()
    eng = engine_at(20)
    image = _fresh_image(eng, 6)
    rate = 400_000
    proxy = proxy_to_registry(rate=rate, stall_after=2 * MB, stall_for=4.0)  # slow, with a pause mid-layer
    ref = f"{proxy.address}/{image}"
    t0 = time.monotonic()
    res = distribute.push(image, ref, engine=eng, progress="text")
    elapsed = time.monotonic() - t0
    out = capsys.readouterr().out
    repo, tag = _split(ref)
    assert proxy.stalls == 1 and proxy.stalled_s >= 3.5, "the proxy never paused the upload"
    assert proxy.uploaded >= 6 * MB, f"only {proxy.uploaded} bytes went through the proxy"
    assert elapsed >= 0.8 * 6 * MB / rate, f"{elapsed:.1f} s: the throttle was not in the way"
    assert res.verified and res.digest == _registry_digest(st.registry, repo, tag)
    assert res.throughput and res.throughput <= 1.25 * rate, res.throughput
    assert "/s>" in repr(res) and " pushed " in out  # the slow rate is reported
    rows = _push_rows(ref)
    assert [(ok, digest) for ok, digest, _, _ in rows] == [(1, res.digest)], rows
    assert elapsed < 120, f"the slow push took {elapsed:.0f} s"  # correctness bound, not a target
    print(f"slow registry ({rate // 1000} kB/s, a {proxy.stalled_s:.1f} s pause): {res!r} in {elapsed:.1f} s")
    figures.add("faults", injected=1, survived=1, during_push=1)


# -- 2. a registry that stalls for good: one clear error at the timeout ----------------------------------
def test_stalled_registry_push_stops_at_timeout(plab, engine_at, proxy_to_registry, figures):
    from nbops import distribute
    from nbops.errors import PushError

    st = plab.state()
    timeout = 6.0
    image = _fresh_image(engine_at(60), 16)
    eng = engine_at(timeout)
    proxy = proxy_to_registry(stall_after=2 * MB)  # full speed, then nothing more reaches the registry
    ref = f"{proxy.address}/{image}"
    repo, tag = _split(ref)
    t0 = time.monotonic()
    with pytest.raises(PushError) as exc:
        distribute.push(image, ref, engine=eng, progress="text")
    elapsed = time.monotonic() - t0
    msg = exc.value.one_line()
    assert proxy.stalls == 1
    assert "\n" not in msg and proxy.address in msg and "made no progress" in msg and "check the registry" in msg, msg
    assert elapsed < 2 * timeout + 20, f"the stalled push took {elapsed:.0f} s (timeout {timeout} s)"
    rows = _push_rows(ref)
    assert len(rows) == 1 and rows[0][0] == 0 and "made no progress" in rows[0][2], rows
    # the engine gave up too: let the proxy drain, nothing finishes the push behind our back
    proxy.resume(rate=None)
    sent = proxy.wait_quiet()
    assert sent < 16 * MB, f"{sent} bytes reached the registry: the engine went on pushing"
    assert _registry_digest(st.registry, repo, tag) is None, "a manifest appeared for a push reported failed"
    # the next push of the same image works
    again = distribute.push(image, ref, engine=engine_at(30), progress="none")
    assert again.verified and again.digest == _registry_digest(st.registry, repo, tag)
    assert [r[0] for r in _push_rows(ref)] == [0, 1]
    print(f"stalled registry: PushError after {elapsed:.1f} s (timeout {timeout} s): {msg}")
    figures.add("faults", injected=1, survived=1, during_push=1)


# -- 3. a push interrupted in an IPython shell -----------------------------------------------------------
KERNEL_PUSH = """
import sys
from IPython.core.interactiveshell import InteractiveShell
sh = InteractiveShell.instance()
sh.run_line_magic("load_ext", "nbops")
sh.run_line_magic("config", f"NbopsMagics.docker_host = {sys.argv[1]!r}")
sh.run_line_magic("config", "NbopsMagics.progress = 'text'")
print("pushing", flush=True)
res = sh.run_cell(f"%push {sys.argv[2]} --to {sys.argv[3]}")  # IPython keeps the interrupted frames
print("cell-done", type(res.error_in_exec).__name__, flush=True)
sys.stdin.readline()  # stay alive like a kernel after the interrupt
"""


def _lines(stream, q: queue.Queue) -> None:
    for line in stream:
        q.put(line.rstrip("\n"))
    q.put(None)


def _read_until(q: queue.Queue, prefix: str, timeout: float, seen: list[str]) -> str | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = q.get(timeout=max(0.05, deadline - time.monotonic()))
        except queue.Empty:
            break
        if line is None:
            break
        seen.append(line)
        if line.startswith(prefix):
            return line
    return None


def test_interrupted_push_is_cancelled(plab, node, engine_at, proxy_to_registry, figures, helpers):
    from nbops import distribute

    st = plab.state()
    image = _fresh_image(engine_at(60), 16)
    proxy = proxy_to_registry(rate=300_000)  # a long push, so the interrupt lands mid-layer
    ref = f"{proxy.address}/{image}"
    repo, tag = _split(ref)
    proc = subprocess.Popen([sys.executable, "-c", KERNEL_PUSH, node.socket, image, ref], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    q: queue.Queue = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stdout, q), daemon=True).start()
    seen: list[str] = []
    try:
        assert _read_until(q, "pushing", 60, seen), seen
        assert helpers.wait_until(lambda: proxy.uploaded > 1 * MB, timeout=90), "the push never started uploading"
        t0 = time.monotonic()
        os.kill(proc.pid, signal.SIGINT)  # what a kernel interrupt does
        done = _read_until(q, "cell-done", 20, seen)
        interrupted_after = time.monotonic() - t0
        assert done == "cell-done KeyboardInterrupt", seen
        assert proc.poll() is None, "the shell died with the interrupt"
        assert any(line.endswith(" failed") for line in seen), f"the progress display was not closed: {seen}"
        # the engine stopped pushing: at full speed the rest would reach the registry in a second or two
        proxy.resume(rate=None)
        sent = proxy.wait_quiet()
        assert sent < 16 * MB, f"{sent} bytes reached the registry after the interrupt: the engine went on pushing"
        assert _registry_digest(st.registry, repo, tag) is None, "the interrupted push still finished"
        rows = _push_rows(ref)
        assert rows and all(ok == 0 for ok, *_ in rows) and "interrupted" in rows[-1][2], rows
    finally:
        if proc.poll() is None:
            proc.stdin.close()
            proc.wait(timeout=20)
    again = distribute.push(image, ref, engine=engine_at(30), progress="none")
    assert again.verified and again.digest == _registry_digest(st.registry, repo, tag)
    assert [r[0] for r in _push_rows(ref)] == [0, 1]
    print(f"interrupted push: cell ended {interrupted_after:.1f} s after SIGINT, {sent / MB:.1f} MB of 16 sent, "
          f"then {again!r}")
    figures.add("faults", injected=1, survived=1, during_push=1)


# -- 4. the engine hangs after a build started: the stall watchdog --------------------------------------
@pytest.mark.timeout(240)  # pytest-timeout's signal ends the test; the finally resumes the engine
@pytest.mark.parametrize("builder", ["buildkit", "legacy"])
def test_engine_hung_mid_build(node, engine_at, builder, figures, helpers):
    from nbops import history
    from nbops.build import build
    from nbops.errors import EngineHung

    stall, timeout = 4.0, 4.0
    eng = engine_at(timeout)
    seconds = 5000 + int(uuid.uuid4().int % 900)  # a unique command line to find the build's process
    stopped: dict[str, float] = {}
    cancel, lock = threading.Event(), threading.Lock()

    def stop_engine_when_running():
        if helpers.wait_until(lambda: cancel.is_set() or helpers.pids_with(f"sleep {seconds}"), timeout=60):
            time.sleep(0.5)
            with lock:  # never stop the engine after the test resumed it for good
                if not cancel.is_set():
                    os.kill(node.dockerd_pid, signal.SIGSTOP)
                    stopped["t"] = time.monotonic()

    tmp = Path(tempfile.gettempdir())

    def temp_files() -> set[str]:  # the CLI's Dockerfile from stdin, nbops' build directory
        return {p.name for pattern in ("docker-build-tempdockerfile-*", "nbops-build-*") for p in tmp.glob(pattern)}

    before = temp_files()
    stopper = threading.Thread(target=stop_engine_when_running, daemon=True)
    stopper.start()
    try:
        with pytest.raises(EngineHung) as exc:
            build(f"FROM nbops/busybox\nRUN sleep {seconds}\n", [f"rel/hung:{builder}"], engine=eng, builder=builder,
                  nocache=True, progress="none", stall_timeout=stall)
        t_end = time.monotonic()
    finally:
        with lock:
            cancel.set()
            os.kill(node.dockerd_pid, signal.SIGCONT)
        stopper.join(5)
    assert "t" in stopped, "the engine was never stopped"
    assert not temp_files() - before, f"the killed build left {temp_files() - before} in {tmp}"
    waited = t_end - stopped["t"]
    msg = exc.value.one_line()
    assert "\n" not in msg and "stopped answering in the middle of the build" in msg and "nbops doctor" in msg, msg
    assert waited < stall + timeout + 15, f"EngineHung only {waited:.1f} s after the engine stopped"
    row = history.default().execute("SELECT ok, error FROM builds WHERE tags LIKE ? ORDER BY id DESC LIMIT 1",
                                    (f"%rel/hung:{builder}%",))
    assert row and row[0][0] == 0 and "stopped answering" in row[0][1], row
    # once the engine runs again it drops the build whose client hung up
    gone = helpers.wait_until(lambda: not helpers.pids_with(f"sleep {seconds}"), timeout=60)
    assert gone, "the build's step still runs after the engine resumed"
    print(f"{builder}: engine stopped mid-build → EngineHung {waited:.1f} s later "
          f"(stall {stall} s + ping {timeout} s): {msg}")
    figures.add("faults", injected=1, survived=1, during_build=1)


@pytest.mark.parametrize("builder", ["buildkit", "legacy", "magic"])
def test_silent_step_on_a_healthy_engine_completes(node, engine_at, builder, figures):
    from nbops.build import build

    stall = 3.0
    source = f"FROM nbops/busybox\nRUN sleep 10 && echo {uuid.uuid4().hex} > /done\n"
    if builder == "magic":  # %config NbopsMagics.stall_timeout reaches the build
        from IPython.core.interactiveshell import InteractiveShell

        sh = InteractiveShell.instance()
        try:
            sh.run_line_magic("load_ext", "nbops")
            for key, value in (("docker_host", node.socket), ("timeout", 10.0), ("stall_timeout", stall),
                               ("progress", "none")):
                sh.run_line_magic("config", f"NbopsMagics.{key} = {value!r}")
            sh.run_cell_magic("dockerfile", "silent", source)
            res = sh.run_line_magic("build", "silent -t rel/silent:magic --no-cache")
        finally:
            InteractiveShell.clear_instance()
    else:
        res = build(source, [f"rel/silent:{builder}"], engine=engine_at(10), builder=builder, nocache=True,
                    progress="none", stall_timeout=stall)
    waits = [line for line in res.log if "the engine answers a ping, still waiting" in line]
    assert res.image_id and res.duration_s >= 10
    assert len(waits) >= 2, f"the watchdog never checked the engine during the silent step: {res.log}"
    print(f"{builder}: a 10 s silent step with stall_timeout {stall} s completed in {res.duration_s:.1f} s "
          f"after {len(waits)} pings")
    figures.add("faults", injected=1, survived=1, during_build=1)
