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
        script = (f"ip addr add {node.ip}/{prefix} dev eth0 && ip link set eth0 up && ip link set lo up"
                  f" && ip route add default via {state.gateway}")
        _sh(["ip", "netns", "exec", node.netns, "sh", "-c", script])

    def _in_node(self, node: NodeState, command: str) -> list[str]:
        # nsenter, not `ip netns exec`: the latter remounts /sys and dockerd then fails
        # ("Devices cgroup isn't mounted"). unshare --uts gives the node its own hostname.
        return ["nsenter", f"--net=/run/netns/{node.netns}", "unshare", "--uts", "sh", "-c",
                f"hostname {node.name} && exec {command}"]

    def _start_node(self, state: LabState, node: NodeState) -> None:
        d = Path(node.dir)
        d.mkdir(parents=True, exist_ok=True)
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
            "insecure-registries": [state.subnet], "storage-driver": "overlay2",
            "live-restore": state.live_restore, "labels": [f"{k}={v}" for k, v in node.labels.items()],
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
                image, _ = client.images.build(path=str(ctx), tag=BUSYBOX_IMAGE, forcerm=True)
                remote = f"{state.registry}/{BUSYBOX_IMAGE}"
                image.tag(remote)
                for chunk in client.api.push(remote, stream=True, decode=True):
                    if "error" in chunk:
                        raise LabError(f"pushing the base image failed: {chunk['error']}")
                for node in state.nodes[1:]:
                    other = docker.DockerClient(base_url=node.socket, version="auto", timeout=60)
                    try:
                        other.images.pull(remote).tag(BUSYBOX_IMAGE)
                    finally:
                        other.close()
            finally:
                client.close()
        finally:
            shutil.rmtree(ctx, ignore_errors=True)

    def _swarm(self, state: LabState) -> None:
        import docker

        manager = state.nodes[0]
        client = docker.DockerClient(base_url=manager.socket, version="auto", timeout=60)
        try:
            client.swarm.init(advertise_addr=manager.ip, listen_addr=f"{manager.ip}:2377")
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
                                       "availability": None, "socket": n.socket}
                if _alive(n.dockerd_pid):
                    info = _engine_version(n)
                    if info:
                        row.update(engine=info.get("Version"), api=info.get("ApiVersion"), state="up")
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

    # -- down --------------------------------------------------------------------------------
    def down(self, *, quiet: bool = False) -> list[str]:
        """Stop every lab process and remove every kernel object and directory. Returns what was done."""
        done: list[str] = []
        st = self.state()
        # 1. processes: dockerd first (it stops its containers), then containerd, shims, registry
        if st:
            for n in st.nodes:
                if _stop(n.dockerd_pid, timeout=15):
                    done.append(f"stopped dockerd of {n.name} (pid {n.dockerd_pid})")
            for n in st.nodes:
                if _stop(n.containerd_pid, timeout=5):
                    done.append(f"stopped containerd of {n.name} (pid {n.containerd_pid})")
            if _stop(st.registry_pid, timeout=5):
                done.append(f"stopped registry (pid {st.registry_pid})")
        for pid in _pids_mentioning(str(self.dir)):
            if _stop(pid, timeout=5):
                done.append(f"stopped leftover process {pid}")
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
            "processes": [str(p) for p in _pids_mentioning(str(self.dir))],
            "netns": [n for n in _netns_list() if n.startswith(self.prefix + "-")],
            "links": [x for x in _links() if x == self.prefix or x.startswith(self.prefix + "-")],
            "mounts": _mounts_under(self.dir),
            "dirs": [str(self.dir)] if self.dir.exists() else [],
        }


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


def _stop(pid: int | None, *, timeout: float) -> bool:
    if not _alive(pid):
        return False
    assert pid is not None
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            if not _alive(pid):
                return True
            time.sleep(0.05)
    return True


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
