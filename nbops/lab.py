"""The local lab: real Docker engines, a real registry and a real Swarm, started and owned by nbops.

Layout (all names derive from the state directory, so several labs can live side by side):

* a Linux bridge ``nb-<id>`` with address ``10.A.B.1/24`` on the host;
* node *i* is a network namespace ``nb-<id>-n<i>`` at ``10.A.B.(i+1)``, running its own containerd
  and dockerd (own data root, exec root, socket and pid file under ``<lab>/n<i>/``) and its own
  hostname (UTS namespace) — so the lab never touches the machine's own Docker, docker0 or
  iptables chains;
* a ``docker-registry`` on the host, listening on ``10.A.B.1:5000`` (reachable from every node);
* node 1 is the Swarm manager; the others join as workers;
* the base image ``nbops/busybox`` is built FROM scratch from busybox-static and pushed to the
  registry.

``up`` is idempotent, ``down`` stops every process by pid and removes every kernel object and
directory it created; both first clear leftovers of a killed run, found by name.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import paths
from .errors import LabError

REGISTRY_PORT = 5000
SYSTEM_PACKAGES = {"dockerd": "docker.io", "containerd": "containerd", "docker-registry": "docker-registry",
                   "busybox": "busybox-static", "ip": "iproute2", "nsenter": "util-linux",
                   "iptables": "iptables"}
BUSYBOX_IMAGE = "nbops/busybox:latest"
HEARTBEAT_S = 2
CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass
class NodeState:
    index: int
    name: str
    netns: str
    veth: str
    ip: str
    dir: str
    containerd_pid: int | None = None
    dockerd_pid: int | None = None
    role: str = "manager"
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def socket(self) -> str:
        return f"unix://{self.dir}/docker.sock"


@dataclass
class LabState:
    id: str
    dir: str
    bridge: str
    subnet: str
    gateway: str
    registry: str
    registry_pid: int | None = None
    live_restore: bool = False
    swarm: bool = True
    nodes: list[NodeState] = field(default_factory=list)
    started: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> LabState:
        raw = json.loads(text)
        raw["nodes"] = [NodeState(**n) for n in raw.get("nodes", [])]
        return cls(**raw)


class Lab:
    """The lab rooted at ``home`` (default: ``$NBOPS_HOME/lab``)."""

    def __init__(self, home: str | os.PathLike[str] | None = None) -> None:
        self.dir = Path(home).resolve() if home else paths.lab_dir()
        self.id = hashlib.sha1(str(self.dir).encode()).hexdigest()[:5]
        self.state_file = self.dir / "lab.json"

    def __repr__(self) -> str:
        return f"<Lab {self.id} at {self.dir}>"

    # -- state -------------------------------------------------------------------------------
    def state(self) -> LabState | None:
        try:
            return LabState.from_json(self.state_file.read_text())
        except (OSError, ValueError, TypeError):
            return None

    def _save(self, state: LabState) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(state.to_json())
        tmp.replace(self.state_file)

    @property
    def prefix(self) -> str:
        return f"nb-{self.id}"

    def is_up(self) -> bool:
        st = self.state()
        return bool(st) and _alive(st.registry_pid) and all(
            _alive(n.dockerd_pid) and _alive(n.containerd_pid) for n in st.nodes
        )

    # -- up -------------------------------------------------------------------------------------
    def up(self, nodes: int = 1, *, live_restore: bool = False, swarm: bool = True,
           timeout: float = 90.0, progress: Any = None) -> LabStatus:
        """Start the lab (or return the running one's status when it is already up as asked)."""
        check_system()
        if nodes < 1 or nodes > 9:
            raise LabError(f"a lab has 1 to 9 nodes, not {nodes}", hint="use --nodes 1..9")
        if live_restore and swarm:
            raise LabError("--live-restore does not apply to swarm mode (dockerd refuses both)",
                           hint="use `nbops lab up --live-restore --no-swarm` for a single-engine lab")
        st = self.state()
        if st and self.is_up() and len(st.nodes) == nodes and st.live_restore == live_restore and st.swarm == swarm:
            return self.status()
        self.down(quiet=True)
        say = progress or (lambda msg: None)
        t0 = time.monotonic()
        subnet = self._pick_subnet()
        net = ipaddress.ip_network(subnet)
        hosts = list(net.hosts())
        gateway = str(hosts[0])
        state = LabState(id=self.id, dir=str(self.dir), bridge=self.prefix, subnet=subnet, gateway=gateway,
                         registry=f"{gateway}:{REGISTRY_PORT}", live_restore=live_restore, swarm=swarm,
                         started=time.time())
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            _sh(["ip", "link", "add", state.bridge, "type", "bridge"])
            _sh(["ip", "addr", "add", f"{gateway}/{net.prefixlen}", "dev", state.bridge])
            _sh(["ip", "link", "set", state.bridge, "up"])
            # node-to-node traffic crosses the bridge; a host firewall (e.g. Docker's FORWARD DROP
            # with br_netfilter) must not drop it
            _sh(["iptables", "-I", "FORWARD", "-i", state.bridge, "-o", state.bridge, "-j", "ACCEPT",
                 "-m", "comment", "--comment", self.prefix], check=False)
            say(f"bridge {state.bridge} {gateway}/{net.prefixlen}")
            state.registry_pid = self._start_registry(state)
            for i in range(1, nodes + 1):
                node = NodeState(index=i, name=f"node{i}", netns=f"{self.prefix}-n{i}", veth=f"{self.prefix}-n{i}",
                                 ip=str(hosts[i]), dir=str(self.dir / f"n{i}"),
                                 role="manager" if i == 1 else "worker", labels={"nbops.node": f"node{i}"})
                state.nodes.append(node)
                self._add_netns(state, node)
                self._save(state)
                self._start_node(state, node)
                self._save(state)
            for node in state.nodes:
                _wait_engine(node, deadline=t0 + timeout)
                say(f"{node.name} engine up at {node.ip}")
            _wait_http(f"http://{state.registry}/v2/", deadline=t0 + timeout)
            say(f"registry up at {state.registry}")
            self._base_image(state)
            say(f"base image {BUSYBOX_IMAGE} built and pushed")
            if swarm:
                self._swarm(state)
                say(f"swarm of {nodes} node(s) ready")
        except BaseException:
            self._save(state)
            self.down(quiet=True)
            raise
        self._save(state)
        return self.status()

    def _pick_subnet(self) -> str:
        used = _sh(["ip", "-4", "-o", "addr"], capture=True)
        seed = int(self.id, 16)
        for k in range(200):
            a = 200 + (seed + k) % 50
            b = 1 + ((seed >> 8) + 7 * k) % 250
            cand = f"10.{a}.{b}."
            if cand not in used:
                return f"{cand}0/24"
        raise LabError("no free 10.x.y.0/24 subnet for the lab bridge", hint="remove unused bridges (ip -4 addr)")

    def _add_netns(self, state: LabState, node: NodeState) -> None:
        _sh(["ip", "netns", "add", node.netns])
        _sh(["ip", "link", "add", node.veth, "type", "veth", "peer", "name", "eth0", "netns", node.netns])
        _sh(["ip", "link", "set", node.veth, "master", state.bridge, "up"])
        prefix = ipaddress.ip_network(state.subnet).prefixlen
        # no default route: a node reaches the lab subnet (the other nodes, the registry on the gateway)
        # and nothing else. Anything that would leave the lab — a pull from Docker Hub, a container's
        # upstream DNS — fails at once with "network is unreachable" instead of sending packets to
        # the host's resolver (which, with forwarding on, could leave the machine) and waiting out
        # timeouts (10 s per lookup, measured: tests/reliability/test_load.py's old 17/50).
        script = f"ip addr add {node.ip}/{prefix} dev eth0 && ip link set eth0 up && ip link set lo up"
        _sh(["ip", "netns", "exec", node.netns, "sh", "-c", script])

    def _in_node(self, node: NodeState, command: str) -> list[str]:
        # nsenter, not `ip netns exec`: the latter remounts /sys and dockerd then fails
        # ("Devices cgroup isn't mounted"). unshare --uts gives the node its own hostname.
        return ["nsenter", f"--net=/run/netns/{node.netns}", "unshare", "--uts", "sh", "-c",
                f"hostname {node.name} && exec {command}"]

    def _start_node(self, state: LabState, node: NodeState, *, reuse_containerd: bool = False) -> None:
        d = Path(node.dir)
        d.mkdir(parents=True, exist_ok=True)
        if not reuse_containerd:
            (d / "containerd.toml").write_text("version = 2\n")
            # its own containerd: a system containerd (if the machine runs Docker) is never shared
            ctd = (f"containerd --config {d}/containerd.toml --root {d}/containerd --state {d}/containerd-state"
                   f" --address {d}/containerd.sock")
            node.containerd_pid = _spawn(self._in_node(node, ctd), d / "containerd.log")
            _wait_path(d / "containerd.sock", time.monotonic() + 20, what=f"containerd of {node.name}",
                       log=d / "containerd.log")
        daemon = {
            "data-root": f"{d}/data", "exec-root": f"{d}/exec", "pidfile": f"{d}/docker.pid",
            "hosts": [f"unix://{d}/docker.sock"], "containerd": f"{d}/containerd.sock",
            # the exact address too: BuildKit (20.10) ignores CIDR entries
            "insecure-registries": [state.registry, state.subnet], "storage-driver": "overlay2",
            "live-restore": state.live_restore, "labels": [f"{k}={v}" for k, v in node.labels.items()],
            # every container of the node lives under /sys/fs/cgroup/<ctrl>/<netns name>/: a stopped
            # node or a killed run's containers are found (and killed) by that name
            "cgroup-parent": f"/{node.netns}",
        }
        (d / "daemon.json").write_text(json.dumps(daemon, indent=2))
        node.dockerd_pid = _spawn(self._in_node(node, f"dockerd --config-file {d}/daemon.json"), d / "dockerd.log")

    def _start_registry(self, state: LabState) -> int:
        rdir = self.dir / "registry"
        (rdir / "data").mkdir(parents=True, exist_ok=True)
        cfg = rdir / "config.yml"
        cfg.write_text(
            "version: 0.1\nlog: {level: warn}\n"
            f"http: {{addr: '{state.registry}'}}\n"
            f"storage: {{filesystem: {{rootdirectory: '{rdir / 'data'}'}}, delete: {{enabled: true}}}}\n"
        )
        return _spawn(["docker-registry", "serve", str(cfg)], rdir / "registry.log")

    def _base_image(self, state: LabState) -> None:
        import docker

        busybox = shutil.which("busybox") or "/bin/busybox"
        ctx = Path(tempfile.mkdtemp(prefix="bb-", dir=self.dir))
        try:
            shutil.copy2(busybox, ctx / "busybox")
            (ctx / "Dockerfile").write_text(
                'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
                'LABEL org.opencontainers.image.title="nbops busybox base" org.nbops.lab="1"\nCMD ["sh"]\n'
            )
            node1 = state.nodes[0]
            client = docker.DockerClient(base_url=node1.socket, version="auto", timeout=60)
            try:
                client.images.build(path=str(ctx), tag=BUSYBOX_IMAGE, forcerm=True)
                _distribute(client, state, BUSYBOX_IMAGE)
            finally:
                client.close()
        finally:
            shutil.rmtree(ctx, ignore_errors=True)

    # -- richer bases --------------------------------------------------------------------------
    @property
    def cache_dir(self) -> Path:
        """Where built bases are kept across ``down``/``up`` (beside the lab dir, which ``down`` removes)."""
        return self.dir.parent / f"{self.dir.name}-cache"

    def debian_base(self, suite: str = "bookworm", *, mirror: str = "http://deb.debian.org/debian",
                    timeout: float = 1200.0, progress: Any = None) -> BaseImage:
        """``nbops/debian:<suite>`` on every node: a Debian minbase made once with debootstrap (from
        Debian's package mirror), cached as a tar under :attr:`cache_dir`, then ``docker import``-ed
        on node 1, pushed to the lab registry and pulled by the other nodes."""
        import docker

        say = progress or (lambda msg: None)
        t0 = time.monotonic()
        st = self._require()
        if not re.fullmatch(r"[a-z][a-z0-9-]{1,30}", suite):
            raise LabError(f"not a Debian suite name: {suite!r}", hint="e.g. bookworm or trixie")
        tar = self.cache_dir / f"debian-{suite}-minbase.tar"
        built = not tar.exists()
        if built:
            self._debootstrap(suite, mirror, tar, timeout=timeout, say=say)
        tag = f"nbops/debian:{suite}"
        client = docker.DockerClient(base_url=st.nodes[0].socket, version="1.41", timeout=300)
        try:
            with open(tar, "rb") as fh:  # a file object: a missing path would be taken for a URL
                client.api.import_image(src=fh, repository="nbops/debian", tag=suite,
                                        changes=['CMD ["/bin/bash"]', "LABEL org.nbops.lab=1"])
            say(f"imported {tag} on {st.nodes[0].name}")
            _distribute(client, st, tag)
            size = client.images.get(tag).attrs["Size"]
        except docker.errors.DockerException as exc:
            raise LabError(f"could not import or distribute {tag}: {exc}",
                           hint=f"is the lab up? `nbops lab status`; remove {tar} to rebuild it") from exc
        finally:
            client.close()
        say(f"{tag} on every node")
        return BaseImage(tag, str(tar), built, round(size / 1e6, 1), time.monotonic() - t0)

    def _debootstrap(self, suite: str, mirror: str, tar: Path, *, timeout: float, say: Any) -> None:
        if not shutil.which("debootstrap"):
            raise LabError("debootstrap is not installed", hint="apt-get install -y debootstrap")
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        rootfs = Path(tempfile.mkdtemp(prefix=f"debian-{suite}-", dir=self.cache_dir))
        log = self.cache_dir / f"debootstrap-{suite}.log"
        try:
            say(f"debootstrap --variant=minbase {suite} (once; cached in {tar})")
            with open(log, "wb") as fh:
                try:
                    res = subprocess.run(["debootstrap", "--variant=minbase", suite, str(rootfs), mirror],
                                         stdout=fh, stderr=subprocess.STDOUT, timeout=timeout)
                except subprocess.TimeoutExpired as exc:
                    raise LabError(f"debootstrap {suite} took longer than {timeout:.0f} s",
                                   hint=f"see {log}") from exc
            if res.returncode != 0:
                raise LabError(f"debootstrap {suite} failed: {_tail(log)}", hint=f"see {log}")
            partial = tar.with_suffix(".partial")
            _sh(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(partial), "."])
            partial.replace(tar)
        finally:
            # debootstrap may leave /proc, /sys mounted inside the rootfs on failure
            for mnt in sorted(_mounts_under(rootfs), key=len, reverse=True):
                subprocess.run(["umount", "-l", mnt], capture_output=True)
            shutil.rmtree(rootfs, ignore_errors=True)

    def _swarm(self, state: LabState) -> None:
        import docker

        manager = state.nodes[0]
        client = docker.DockerClient(base_url=manager.socket, version="auto", timeout=60)
        try:
            # a short dispatcher heartbeat: a lost node is marked down in seconds, not ~15 s, so a
            # workshop sees tasks rescheduled while it watches
            client.swarm.init(advertise_addr=manager.ip, listen_addr=f"{manager.ip}:2377",
                              dispatcher_heartbeat_period=HEARTBEAT_S * 1_000_000_000)
            client.swarm.reload()
            token = client.swarm.attrs["JoinTokens"]["Worker"]
            for node in state.nodes[1:]:
                other = docker.DockerClient(base_url=node.socket, version="auto", timeout=60)
                try:
                    other.swarm.join(remote_addrs=[f"{manager.ip}:2377"], join_token=token,
                                     advertise_addr=node.ip, listen_addr=f"{node.ip}:2377")
                finally:
                    other.close()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                ready = [n for n in client.nodes.list() if n.attrs["Status"]["State"] == "ready"]
                if len(ready) == len(state.nodes):
                    break
                time.sleep(0.3)
            for n in client.nodes.list():
                hostname = n.attrs["Description"]["Hostname"]
                spec = dict(n.attrs["Spec"])
                spec["Labels"] = {**spec.get("Labels", {}), "nbops.node": hostname}
                n.update(spec)
        finally:
            client.close()

    # -- status ------------------------------------------------------------------------------
    def status(self) -> LabStatus:
        st = self.state()
        rows: list[dict[str, Any]] = []
        registry_up = False
        if st:
            registry_up = _alive(st.registry_pid) and _http_ok(f"http://{st.registry}/v2/")
            swarm_nodes = self._swarm_nodes(st) if st.swarm else {}
            for n in st.nodes:
                row: dict[str, Any] = {"node": n.name, "address": n.ip, "role": n.role,
                                       "engine": None, "api": None, "state": "down", "swarm": None,
                                       "availability": None, "rss_mb": None, "socket": n.socket}
                if _alive(n.dockerd_pid):
                    info = _engine_version(n)
                    if info:
                        row.update(engine=info.get("Version"), api=info.get("ApiVersion"), state="up",
                                   rss_mb=round((_rss(n.dockerd_pid) + _rss(n.containerd_pid)) / 1024, 1))
                sw = swarm_nodes.get(n.name)
                if sw:
                    row.update(swarm=sw["Status"]["State"], availability=sw["Spec"].get("Availability"))
                rows.append(row)
        return LabStatus(self, st, rows, registry_up)

    def _swarm_nodes(self, st: LabState) -> dict[str, dict[str, Any]]:
        import docker

        if not st.nodes or not _alive(st.nodes[0].dockerd_pid):
            return {}
        try:
            client = docker.DockerClient(base_url=st.nodes[0].socket, version="auto", timeout=5)
            try:
                return {n.attrs["Description"]["Hostname"]: n.attrs for n in client.nodes.list()}
            finally:
                client.close()
        except Exception:
            return {}

    # -- faults (for teaching: each returns within its bound) ----------------------------------
    def node(self, which: int | str) -> NodeState:
        """The node named ``which``: its index (1..N), ``"node2"`` or ``"n2"``."""
        st = self._require()
        key = str(which).strip().lower()
        for n in st.nodes:
            if key in (str(n.index), n.name, f"n{n.index}"):
                return n
        names = ", ".join(n.name for n in st.nodes)
        raise LabError(f"the lab has no node {which!r}", hint=f"its nodes are {names}")

    def _require(self) -> LabState:
        st = self.state()
        if not st or not st.nodes:
            raise LabError("no lab is running here", hint="start one with `nbops lab up --nodes 3`")
        return st

    def _update_node(self, node: NodeState) -> None:
        st = self._require()
        st.nodes = [node if n.index == node.index else n for n in st.nodes]
        self._save(st)

    def stop_node(self, which: int | str, *, crash: bool = False, timeout: float = 20.0) -> FaultResult:
        """Stop a node's engine. ``crash=True`` kills it and every container on it at once (power
        loss); otherwise dockerd shuts down as usual (with live-restore its containers keep running)."""
        t0 = time.monotonic()
        node = self.node(which)
        if not _alive(node.dockerd_pid):
            return FaultResult("stop", node.name, "already stopped", time.monotonic() - t0)
        if crash:
            _stop_many([node.dockerd_pid], grace=0)
            killed = _kill_cgroups(node.netns, remove=False)
            detail = f"dockerd killed, {killed} container process(es) killed"
        else:
            _stop_many([node.dockerd_pid], grace=timeout)
            detail = "dockerd stopped"
        return FaultResult("stop", node.name, detail, time.monotonic() - t0)

    def start_node(self, which: int | str, *, timeout: float = 30.0) -> FaultResult:
        """Start a stopped node's engine again (and its containerd if that died too)."""
        t0 = time.monotonic()
        st = self._require()
        node = self.node(which)
        if _alive(node.dockerd_pid):
            return FaultResult("start", node.name, "already running", time.monotonic() - t0)
        d = Path(node.dir)
        if not _alive(node.containerd_pid):
            (d / "containerd.sock").unlink(missing_ok=True)
        (d / "docker.pid").unlink(missing_ok=True)
        self._start_node(st, node, reuse_containerd=_alive(node.containerd_pid))
        self._update_node(node)
        _wait_engine(node, deadline=t0 + timeout)
        return FaultResult("start", node.name, f"dockerd up (pid {node.dockerd_pid})", time.monotonic() - t0)

    def restart_manager(self, *, timeout: float = 60.0) -> FaultResult:
        """Stop and start the swarm manager's engine (node 1); returns once the manager answers again."""
        t0 = time.monotonic()
        st = self._require()
        self.stop_node(1, timeout=min(20.0, timeout / 2))
        self.start_node(1, timeout=max(10.0, timeout - (time.monotonic() - t0)))
        if st.swarm:
            deadline = t0 + timeout
            while not self.swarm_nodes():
                if time.monotonic() > deadline:
                    raise LabError("the swarm manager did not answer after its restart",
                                   hint=f"see {st.nodes[0].dir}/dockerd.log")
                time.sleep(0.3)
        return FaultResult("restart-manager", st.nodes[0].name, "manager restarted", time.monotonic() - t0)

    def drain(self, which: int | str) -> FaultResult:
        """Set a node's swarm availability to ``drain``: its tasks move to the other nodes."""
        return self._availability(which, "drain")

    def activate(self, which: int | str) -> FaultResult:
        """Set a node's swarm availability back to ``active``."""
        return self._availability(which, "active")

    def _availability(self, which: int | str, availability: str) -> FaultResult:
        import docker

        t0 = time.monotonic()
        st = self._require()
        node = self.node(which)
        if not st.swarm:
            raise LabError("this lab runs no swarm", hint="start it with `nbops lab up` (swarm is the default)")
        client = docker.DockerClient(base_url=st.nodes[0].socket, version="1.41", timeout=10)
        try:
            found = [n for n in client.nodes.list() if n.attrs["Description"]["Hostname"] == node.name]
            if not found:
                raise LabError(f"{node.name} is not in the swarm", hint="restart the lab: `nbops lab up`")
            sw = found[0]
            spec = dict(sw.attrs["Spec"])
            spec["Availability"] = availability
            sw.update(spec)
        except docker.errors.DockerException as exc:
            raise LabError(f"could not set {node.name} to {availability}: {exc}",
                           hint="is the manager (node1) running? `nbops lab status`") from exc
        finally:
            client.close()
        return FaultResult(availability, node.name, f"availability {availability}", time.monotonic() - t0)

    def disconnect(self, which: int | str) -> FaultResult:
        """Cut a node off the lab network (its veth goes down); the swarm loses it after a few heartbeats."""
        return self._link(which, "down", "disconnect")

    def reconnect(self, which: int | str) -> FaultResult:
        """Plug a disconnected node back into the lab network."""
        return self._link(which, "up", "reconnect")

    def _link(self, which: int | str, updown: str, fault: str) -> FaultResult:
        t0 = time.monotonic()
        node = self.node(which)
        _sh(["ip", "link", "set", node.veth, updown])
        return FaultResult(fault, node.name, f"link {node.veth} {updown}", time.monotonic() - t0)

    def swarm_nodes(self) -> dict[str, dict[str, Any]]:
        """The manager's view of the nodes: hostname → {state, availability, role, id} (empty if it is down)."""
        st = self.state()
        if not st or not st.swarm:
            return {}
        return {name: {"state": a["Status"]["State"], "availability": a["Spec"].get("Availability"),
                       "role": a["Spec"].get("Role"), "id": a["ID"]}
                for name, a in self._swarm_nodes(st).items()}

    def memory(self) -> dict[str, float]:
        """Resident memory (MB) of each node's dockerd + containerd (shims and containers not included)."""
        st = self.state()
        return {n.name: round((_rss(n.dockerd_pid) + _rss(n.containerd_pid)) / 1024, 1)
                for n in (st.nodes if st else [])}

    # -- down --------------------------------------------------------------------------------
    def down(self, *, quiet: bool = False) -> list[str]:
        """Stop every lab process and remove every kernel object and directory. Returns what was done.

        Nothing of a lab survives ``down``, so nothing is shut down gracefully for long: every
        dockerd gets SIGTERM at once and SIGKILL after a short grace (a swarm dockerd otherwise
        waits 5 s for its ingress network), then every process left in the lab's cgroups."""
        done: list[str] = []
        st = self.state()
        # 1. processes: all dockerds at once, then the containers (by cgroup), containerd, shims, registry
        if st:
            stopped = _stop_many([n.dockerd_pid for n in st.nodes], grace=1.5)
            done += [f"stopped dockerd (pid {p})" for p in stopped]
        killed = _kill_cgroups(self.prefix + "-", remove=False)
        if killed:
            done.append(f"killed {killed} container process(es)")
        others = [n.containerd_pid for n in st.nodes] + [st.registry_pid] if st else []
        stopped = _stop_many(others + _pids_mentioning(str(self.dir) + "/"), grace=3.0)
        done += [f"stopped process {p}" for p in stopped]
        # 2. mounts under the lab dir (overlay layers, netns files of containers), deepest first
        for mnt in sorted(_mounts_under(self.dir), key=len, reverse=True):
            subprocess.run(["umount", "-l", mnt], capture_output=True)
            done.append(f"unmounted {mnt}")
        # 3. kernel objects, found by name
        for ns in _netns_list():
            if ns.startswith(self.prefix + "-"):
                subprocess.run(["ip", "netns", "del", ns], capture_output=True)
                done.append(f"removed netns {ns}")
        for link in _links():
            if link == self.prefix or link.startswith(self.prefix + "-"):
                subprocess.run(["ip", "link", "del", link], capture_output=True)
                done.append(f"removed link {link}")
        while subprocess.run(["iptables", "-D", "FORWARD", "-i", self.prefix, "-o", self.prefix, "-j",
                              "ACCEPT", "-m", "comment", "--comment", self.prefix],
                             capture_output=True).returncode == 0:
            done.append("removed FORWARD rule")
        cgroups = _cgroups(self.prefix + "-")
        if cgroups:
            _kill_cgroups(self.prefix + "-", remove=True)
            done.append(f"removed {len(cgroups)} cgroup(s)")
        # 4. the lab directory itself
        if self.dir.exists():
            shutil.rmtree(self.dir, ignore_errors=True)
            if self.dir.exists():  # a busy mount: try once more after a lazy unmount settles
                time.sleep(0.5)
                shutil.rmtree(self.dir, ignore_errors=True)
            done.append(f"removed {self.dir}")
        if not quiet and not done:
            done.append("nothing to do: no lab was running here")
        return done

    def leftovers(self) -> dict[str, list[str]]:
        """Whatever of this lab still exists on the machine (empty lists after a clean down)."""
        return {
            "processes": [str(p) for p in _pids_mentioning(str(self.dir) + "/")],
            "container_processes": [str(p) for p in _cgroup_pids(self.prefix + "-")],
            "cgroups": _cgroups(self.prefix + "-"),
            "netns": [n for n in _netns_list() if n.startswith(self.prefix + "-")],
            "links": [x for x in _links() if x == self.prefix or x.startswith(self.prefix + "-")],
            "mounts": _mounts_under(self.dir),
            "dirs": [str(self.dir)] if self.dir.exists() else [],
        }


@dataclass
class BaseImage:
    """A base image made available on every node of the lab."""

    image: str
    cache: str
    built: bool
    size_mb: float
    seconds: float

    def __repr__(self) -> str:
        how = "built and cached" if self.built else "from the cache"
        return f"{self.image} ({self.size_mb} MB) on every node, {how} ({self.seconds:.1f} s)"

    def _repr_html_(self) -> str:
        import html

        return f"<p>{html.escape(repr(self))}</p>"

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame([asdict(self)])


@dataclass
class FaultResult:
    """What a lab fault did, to whom, and how long it took."""

    fault: str
    node: str
    detail: str
    seconds: float

    def __repr__(self) -> str:
        return f"{self.fault} {self.node}: {self.detail} ({self.seconds:.1f} s)"

    def _repr_html_(self) -> str:
        import html

        return f"<p><b>{html.escape(self.fault)}</b> {html.escape(self.node)}: {html.escape(self.detail)}" \
               f" <small>({self.seconds:.1f} s)</small></p>"

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame([asdict(self)])


class LabStatus:
    """What ``nbops lab status`` shows: nodes, addresses, roles, engine versions, registry."""

    def __init__(self, lab: Lab, state: LabState | None, rows: list[dict[str, Any]], registry_up: bool) -> None:
        self.lab = lab
        self.state = state
        self.rows = rows
        self.registry_up = registry_up

    @property
    def up(self) -> bool:
        return bool(self.rows) and all(r["state"] == "up" for r in self.rows) and self.registry_up

    @property
    def registry(self) -> str | None:
        return self.state.registry if self.state else None

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame(self.rows)

    def __repr__(self) -> str:
        if not self.state:
            return f"lab {self.lab.id}: not running (start it with `nbops lab up`)"
        lines = [f"lab {self.lab.id} at {self.lab.dir}: {'up' if self.up else 'DEGRADED'}",
                 f"  registry {self.state.registry} {'up' if self.registry_up else 'DOWN'}"]
        for r in self.rows:
            lines.append(f"  {r['node']:<6} {r['address']:<14} {r['role']:<8} engine {r['engine'] or '-':<16} "
                         f"api {r['api'] or '-':<5} {r['state']:<5} swarm {r['swarm'] or '-'}"
                         f" {r['availability'] or ''}".rstrip())
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        if not self.state:
            return f"<p>{self!r}</p>"
        head = (f"<p><b>lab {self.lab.id}</b> — {'up' if self.up else 'degraded'}; registry "
                f"<code>{self.state.registry}</code> {'up' if self.registry_up else 'down'}</p>")
        return head + self.to_frame().drop(columns=["socket"]).to_html(index=False)


# -- helpers ---------------------------------------------------------------------------------------
def check_system() -> None:
    """Raise a LabError naming the missing packages (and the install command) if any are missing."""
    if os.geteuid() != 0:
        raise LabError("the local lab needs root (network namespaces, bridges, dockerd)",
                       hint="run as root, or point DOCKER_HOST at an existing engine")
    missing = sorted({pkg for cmd, pkg in SYSTEM_PACKAGES.items() if not shutil.which(cmd)})
    if missing:
        raise LabError(f"missing system packages: {', '.join(missing)}",
                       hint=f"install them: apt-get install -y {' '.join(missing)} (or run `make setup`)")


def _sh(cmd: list[str], *, check: bool = True, capture: bool = False) -> str:
    res = subprocess.run(cmd, capture_output=True, text=True)
    if check and res.returncode != 0:
        raise LabError(f"`{' '.join(cmd)}` failed: {res.stderr.strip() or res.stdout.strip()}")
    return res.stdout


def _spawn(cmd: list[str], log: Path) -> int:
    with open(log, "ab") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    return proc.pid


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of this process counts as gone
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _distribute(client: Any, state: LabState, tag: str) -> None:
    """Push ``tag`` (present on ``client``'s engine) to the lab registry; pull it on the other nodes."""
    import docker

    remote = f"{state.registry}/{tag}"
    client.images.get(tag).tag(remote)
    for chunk in client.api.push(remote, stream=True, decode=True):
        if "error" in chunk:
            raise LabError(f"pushing {tag} to the lab registry failed: {chunk['error']}")
    for node in state.nodes[1:]:
        other = docker.DockerClient(base_url=node.socket, version="auto", timeout=300)
        try:
            other.images.pull(remote).tag(tag)
        finally:
            other.close()


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _stop_many(pids: list[int | None], *, grace: float) -> list[int]:
    """SIGTERM every live pid at once, SIGKILL those still alive after ``grace`` s; wait ≤ 5 s more.
    Returns the pids that were alive."""
    live = [p for p in dict.fromkeys(pids) if p and _alive(p)]
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        targets = [p for p in live if _alive(p)]
        if not targets:
            break
        if wait <= 0 and sig == signal.SIGTERM:
            continue
        for p in targets:
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            for p in targets:
                _reap(p)
            if not any(_alive(p) for p in targets):
                break
            time.sleep(0.05)
    return live


def _cgroups(prefix: str) -> list[str]:
    """Cgroup directories (every v1 controller) whose top-level name starts with ``prefix``, deepest first."""
    found: list[str] = []
    try:
        controllers = [c for c in CGROUP_ROOT.iterdir() if c.is_dir() and not c.is_symlink()]
    except OSError:
        return found
    for ctrl in controllers:
        try:
            tops = [t for t in ctrl.iterdir() if t.is_dir() and t.name.startswith(prefix)]
        except OSError:
            continue
        for top in tops:
            for root, _dirs, _files in os.walk(top):
                found.append(root)
    return sorted(found, key=lambda p: p.count("/"), reverse=True)


def _cgroup_pids(prefix: str) -> list[int]:
    pids: set[int] = set()
    for cg in _cgroups(prefix):
        try:
            pids.update(int(x) for x in Path(cg, "cgroup.procs").read_text().split())
        except (OSError, ValueError):
            continue
    return sorted(p for p in pids if _alive(p))


def _kill_cgroups(prefix: str, *, remove: bool) -> int:
    """SIGKILL every process in the cgroups named ``prefix…`` (bounded: 5 s); remove the cgroups if asked."""
    killed = 0
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        pids = _cgroup_pids(prefix)
        if not pids:
            break
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    if remove:
        for cg in _cgroups(prefix):
            try:
                os.rmdir(cg)
            except OSError:
                pass
    return killed


def _rss(pid: int | None) -> int:
    """Resident set size of ``pid`` in kB (0 if it is gone)."""
    if not _alive(pid):
        return 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _pids_mentioning(text: str) -> list[int]:
    pids = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd and _alive(int(entry)):
            pids.append(int(entry))
    return pids


def _mounts_under(root: Path) -> list[str]:
    out = []
    prefix = str(root).rstrip("/") + "/"
    try:
        with open("/proc/self/mounts") as fh:
            for line in fh:
                mnt = line.split()[1].encode().decode("unicode_escape")
                if mnt.startswith(prefix) or mnt == str(root):
                    out.append(mnt)
    except OSError:
        pass
    return out


def _netns_list() -> list[str]:
    res = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    return [line.split()[0] for line in res.stdout.splitlines() if line.strip()]


def _links() -> list[str]:
    res = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True)
    names = []
    for line in res.stdout.splitlines():
        parts = line.split(":", 2)
        if len(parts) > 1:
            names.append(parts[1].strip().split("@")[0])
    return names


def _engine_version(node: NodeState) -> dict[str, Any] | None:
    import docker

    try:
        client = docker.DockerClient(base_url=node.socket, version="1.41", timeout=3)
        try:
            return client.version()
        finally:
            client.close()
    except Exception:
        return None


def _wait_engine(node: NodeState, *, deadline: float) -> None:
    while time.monotonic() < deadline:
        if not _alive(node.dockerd_pid):
            raise LabError(f"dockerd of {node.name} exited: {_tail(Path(node.dir) / 'dockerd.log')}",
                           hint=f"see {node.dir}/dockerd.log")
        if _engine_version(node):
            return
        time.sleep(0.2)
    raise LabError(f"dockerd of {node.name} did not answer in time", hint=f"see {node.dir}/dockerd.log")


def _wait_path(path: Path, deadline: float, *, what: str, log: Path) -> None:
    while time.monotonic() < deadline:
        if path.exists():
            return
        time.sleep(0.05)
    raise LabError(f"{what} did not start: {_tail(log)}", hint=f"see {log}")


def _http_ok(url: str, timeout: float = 2.0) -> bool:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status < 500
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except OSError:
        return False


def _wait_http(url: str, *, deadline: float) -> None:
    while time.monotonic() < deadline:
        if _http_ok(url, timeout=1.0):
            return
        time.sleep(0.1)
    raise LabError(f"the lab registry did not answer at {url}")


def _tail(path: Path, n: int = 3) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
        return " | ".join(lines[-n:])
    except OSError:
        return "(no log)"
