"""Writes notebooks/workshop/0*.ipynb (kept as code so their source is reviewable).

    .venv/bin/python scripts/make_workshop.py
"""

from pathlib import Path

import nbformat as nbf

md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell

cells = [
    md("# Workshop 5 — a Swarm on three nodes: rolling update, a failed update rolled back, a node lost\n\n"
       "Until now everything ran on one Docker engine. A **Swarm** joins several engines (*nodes*) into one "
       "cluster: you declare a *service* — an image and a number of *replicas* — and the swarm's manager keeps "
       "that many *tasks* (containers) running somewhere in the cluster, whatever happens to the nodes.\n\n"
       "Here the three nodes are real Docker engines on your own machine, each in its own network namespace "
       "with its own hostname, started by `nbops lab`. Nothing is fetched from the internet: the images are "
       "built from the lab's `nbops/busybox` base and shared through the lab's registry.\n\n"
       "What you will see:\n"
       "1. the lab: three nodes, one manager and two workers;\n"
       "2. a service whose replicas spread over the nodes;\n"
       "3. a **rolling update** to a new release, one task at a time, each new task checked by its HEALTHCHECK;\n"
       "4. an update to a **broken** release that the swarm **rolls back** on its own;\n"
       "5. a **node lost**: its tasks are started again on the other nodes."),
    code('service = "shop"      # the swarm service of this notebook\n'
         "nodes = 3\n"
         'out_dir = "out"       # where the plot is written'),
    md("## 1. The lab\n"
       "`%nbops lab up --nodes 3` starts (or reuses) the three nodes, the registry and the swarm. The table "
       "lists each node's address, role, engine version and memory."),
    code("import os, time\nos.makedirs(out_dir, exist_ok=True)\n%load_ext nbops\n"
         "status = %nbops lab up --nodes {nodes}\nstatus"),
    code("status.to_frame()[['node', 'address', 'role', 'engine', 'swarm', 'availability', 'rss_mb']]"),
    md("## 2. Three releases of a small web shop\n"
       "Each release serves one page with busybox `httpd`. Each has a **HEALTHCHECK**: the engine runs it every "
       "second and marks the container *healthy* or *unhealthy*. Release 3 is broken on purpose: its health "
       "check looks for a file that does not exist."),
    code('%%dockerfile shop\nFROM nbops/busybox\nARG release=1\nARG health_file=index.html\n'
         'RUN echo "shop release ${release}" > /index.html\nENV HEALTH_FILE=${health_file}\n'
         "HEALTHCHECK --interval=1s --timeout=2s --retries=2 CMD test -f /$HEALTH_FILE\n"
         'CMD ["httpd", "-f", "-p", "8080", "-h", "/"]'),
    md("The build arguments `release` and `health_file` make three images from one Dockerfile. Each is pushed "
       "to the lab registry, from where every node pulls it; the registry's **digest** names each release "
       "for good."),
    code("images = {}\n"
         "for release, health_file in ((1, 'index.html'), (2, 'index.html'), (3, 'missing.html')):\n"
         "    %build shop -t shop:{release} --build-arg release={release} --build-arg health_file={health_file}\n"
         "    images[release] = %push shop:{release}\n"
         "release_of = {p.digest: f'release {r}' for r, p in images.items()}\n"
         "pd_rows = [{'release': r, 'pushed as': p.pinned} for r, p in images.items()]\n"
         "pd_rows"),
    md("## 3. Deploy release 1 on three replicas\n"
       "The swarm's scheduler *spreads* the replicas: one task per node. The `node` column shows where each "
       "task runs."),
    code("deployed = %deploy shop:1 --name {service} --replicas 3 --publish 8080\n"
         "deployed.tasks_frame()[['slot', 'node', 'address', 'state', 'health', 'ports']]"),
    code("assert sorted(t['node'] for t in deployed.tasks) == ['node1', 'node2', 'node3'], deployed.tasks"),
    md("A few helpers to look at the service from the manager: where its tasks run, and the page every "
       "task serves (a bounded number of requests, to the lab's own addresses only)."),
    code("import urllib.request\nimport pandas as pd\nfrom nbops.engine import Engine\n\n"
         "manager = Engine.connect().client\n\n"
         "def tasks(name=service):\n"
         "    hosts = {n.id: n.attrs['Description']['Hostname'] for n in manager.nodes.list()}\n"
         "    rows = [{'node': hosts.get(t.get('NodeID')), 'state': t['Status']['State'],\n"
         "             'desired': t['DesiredState'],\n"
         "             'release': release_of.get(t['Spec']['ContainerSpec']['Image'].rsplit('@', 1)[-1], '?'),\n"
         "             'message': t['Status'].get('Err') or t['Status'].get('Message')}\n"
         "            for t in manager.services.get(name).tasks()]\n"
         "    return pd.DataFrame(rows)\n\n"
         "def running(name=service):\n"
         "    df = tasks(name)\n"
         "    return df[(df.desired == 'running') & (df.state == 'running')]\n\n"
         "def pages(name=service):\n"
         "    hosts = {n.id: n.attrs['Status']['Addr'] for n in manager.nodes.list()}\n"
         "    urls = {f\"http://{hosts[t['NodeID']]}:{p['PublishedPort']}/\"  # one per task and port\n"
         "            for t in manager.services.get(name).tasks()\n"
         "            if t['DesiredState'] == 'running' and t['Status']['State'] == 'running'\n"
         "            for p in t['Status'].get('PortStatus', {}).get('Ports', [])}\n"
         "    out = []\n"
         "    for url in sorted(urls):\n"
         "        with urllib.request.urlopen(url, timeout=3) as resp:\n"
         "            out.append(resp.read().decode().strip())\n"
         "    return sorted(out)\n\n"
         "def wait(check, what, timeout=120):\n"
         "    deadline = time.monotonic() + timeout\n"
         "    while time.monotonic() < deadline:\n"
         "        if check():\n"
         "            return\n"
         "        time.sleep(1)\n"
         "    raise TimeoutError(f'{what}: not within {timeout} s')\n\n"
         "pages()"),
    md("## 4. A rolling update to release 2\n"
       "The service's *update config* says how: one task at a time (`parallelism=1`), a pause between two, "
       "each new task watched for a few seconds (`monitor`) — and if it fails, **roll back** "
       "(`failure_action='rollback'`). The swarm stops an old task, starts a new one, waits until its "
       "HEALTHCHECK passes, then goes on to the next."),
    code("from docker.types import UpdateConfig\n\n"
         "policy = dict(update_config=UpdateConfig(parallelism=1, delay=1_000_000_000, monitor=4_000_000_000,\n"
         "                                         failure_action='rollback', order='stop-first'),\n"
         "              rollback_config=UpdateConfig(parallelism=3, monitor=2_000_000_000))\n\n"
         "def update(release):\n"
         "    svc = manager.services.get(service)\n"
         "    before = svc.attrs.get('UpdateStatus', {}).get('StartedAt')\n"
         "    svc.update(image=images[release].pinned, **policy)\n"
         "    timeline = []\n"
         "    def done():\n"
         "        s = manager.services.get(service).attrs.get('UpdateStatus', {})\n"
         "        timeline.append({'t': time.monotonic(), 'update': s.get('State'), **running().release.value_counts().to_dict()})\n"
         "        return s.get('StartedAt') != before and s.get('State') in (\n"
         "            'completed', 'rollback_completed', 'paused', 'rollback_paused')\n"
         "    wait(done, f'update to release {release}', timeout=180)\n"
         "    df = pd.DataFrame(timeline)\n"
         "    counts = [c for c in df.columns if c.startswith('release')]\n"
         "    df[counts] = df[counts].fillna(0).astype(int)\n"
         "    df['t'] -= df['t'].iloc[0]\n"
         "    return df\n\n"
         "rolling = update(2)\n"
         "rolling.tail(3)"),
    code("print(manager.services.get(service).attrs['UpdateStatus']['State'])\n"
         "wait(lambda: pages() == ['shop release 2'] * 3, 'three tasks serving release 2', timeout=60)\n"
         "pages()"),
    md("## 5. An update to the broken release 3 — rolled back\n"
       "The first new task never becomes healthy, so the swarm stops the update and brings release 2 back. "
       "No one had to intervene, and at most one replica was out of service at a time."),
    code("rollback = update(3)\n"
         "state = manager.services.get(service).attrs['UpdateStatus']\n"
         "print(state['State'], '—', state.get('Message'))\n"
         "assert state['State'] == 'rollback_completed', state"),
    code("wait(lambda: pages() == ['shop release 2'] * 3, 'release 2 back on three tasks', timeout=60)\n"
         "failed = tasks()\n"
         "failed[failed.release == 'release 3'][['node', 'state', 'desired', 'message']]"),
    code("import matplotlib.pyplot as plt\n\n"
         "fig, axes = plt.subplots(1, 2, figsize=(10, 3), sharey=True)\n"
         "for ax, (title, df) in zip(axes, (('rolling update 1 → 2', rolling), ('update 2 → 3, rolled back', rollback))):\n"
         "    for col in sorted(c for c in df.columns if c.startswith('release')):\n"
         "        ax.step(df['t'], df[col], where='post', label=col)\n"
         "    ax.set_title(title); ax.set_xlabel('seconds'); ax.legend(fontsize=8)\n"
         "axes[0].set_ylabel('running tasks')\n"
         "fig.savefig(f'{out_dir}/updates.png', bbox_inches='tight', dpi=110)"),
    md("## 6. A node lost\n"
       "`%nbops lab fault crash node3` kills node 3's engine and its containers at once, as if the machine "
       "lost power. The manager notices within a few heartbeats (2 s each in the lab), marks the node "
       "`down` and starts its tasks on the nodes that are left."),
    code("%nbops lab fault crash node3"),
    code("wait(lambda: len(running()) == 3 and 'node3' not in set(running().node), 'tasks moved off node3', timeout=120)\n"
         "%nbops lab status"),
    code("running()[['node', 'state', 'release']]"),
    md("Bring the node back: it rejoins the swarm as `ready`. The swarm does **not** move running tasks back "
       "on its own — a new node gets tasks at the next update or scale."),
    code("%nbops lab fault start node3\n"
         "wait(lambda: all(n.attrs['Status']['State'] == 'ready' for n in manager.nodes.list()), 'node3 ready', timeout=60)\n"
         "%nbops lab status"),
    md("Other faults to try: `drain` / `activate` a node (tasks leave it politely), `disconnect` / `reconnect` "
       "(cut its network cable), `restart-manager`. When you are done: `%nbops lab down` removes everything "
       "the lab created."),
    code("manager.services.get(service).remove()"),
]

cells_04 = [
    md("# Workshop 4 — deploy on one node, with a HEALTHCHECK\n\n"
       "A container that *runs* is not yet a container that *works*: the process may be up while the service "
       "inside is still starting, or hung. A **HEALTHCHECK** is a command the engine runs inside the container "
       "at a fixed interval; its exit code makes the container `starting`, then `healthy` or `unhealthy`. "
       "Deployment tools wait for `healthy` before sending traffic, and replace what turns `unhealthy`.\n\n"
       "In this notebook: an image whose service needs a few seconds to get ready, its health watched from "
       "`starting` to `healthy`, a fault that makes it `unhealthy`, and the same image deployed as a service "
       "that is only reported done once it is healthy."),
    code('name = "health-demo"   # container and service name\n'
         'out_dir = "out"'),
    md("## 1. The lab and the image\n"
       "The web server only becomes ready after 3 seconds (it then creates `/ready`); the health check tests "
       "for that file every second. `--start-period=10s`: failures in the first 10 s do not count, so a slow "
       "start is not mistaken for a failure — the container stays `starting` until the first check passes."),
    code("import os, time\nos.makedirs(out_dir, exist_ok=True)\n%load_ext nbops\n%nbops lab up"),
    code('%%dockerfile web\nFROM nbops/busybox\nRUN echo "ready and healthy" > /index.html\n'
         "HEALTHCHECK --interval=1s --timeout=2s --start-period=10s --retries=2 CMD test -f /ready\n"
         'CMD ["sh", "-c", "sleep 3 && touch /ready && exec httpd -f -p 8080 -h /"]'),
    code("built = %build web -t web:1\nbuilt"),
    md("## 2. Watch the health of one container\n"
       "We start the container with its port published on the node, then read its health state twice a "
       "second (a bounded number of times)."),
    code("import pandas as pd\nfrom nbops.engine import Engine\n\n"
         "engine = Engine.connect()\n"
         "container = engine.client.containers.run('web:1', detach=True, name=name, ports={'8080/tcp': None})\n\n"
         "def watch(until, limit=60):\n"
         "    rows, t0 = [], time.monotonic()\n"
         "    for _ in range(limit * 2):\n"
         "        container.reload()\n"
         "        health = container.attrs['State']['Health']\n"
         "        rows.append({'t': round(time.monotonic() - t0, 1), 'status': health['Status'],\n"
         "                     'failing streak': health['FailingStreak']})\n"
         "        if health['Status'] == until:\n"
         "            break\n"
         "        time.sleep(0.5)\n"
         "    df = pd.DataFrame(rows)\n"
         "    return df[df.status != df.status.shift()]   # only the changes\n\n"
         "watch('healthy')"),
    code("import urllib.request\n\n"
         "port = container.attrs['NetworkSettings']['Ports']['8080/tcp'][0]['HostPort']\n"
         "from nbops.lab import Lab\nnode_ip = Lab().node(1).ip    # the lab node the engine runs in\n"
         "with urllib.request.urlopen(f'http://{node_ip}:{port}/', timeout=3) as resp:\n"
         "    page = resp.read().decode().strip()\n"
         "page"),
    md("## 3. Break it\n"
       "Remove the file the check looks for — as if the service had lost its database. After `retries` "
       "failed checks in a row the container is `unhealthy`. The engine alone does not restart it: that is "
       "the orchestrator's job (next section)."),
    code("container.exec_run(['rm', '/ready'])\nwatch('unhealthy')"),
    code("log = pd.DataFrame(container.attrs['State']['Health']['Log'])[['Start', 'ExitCode', 'Output']]\n"
         "log.tail(3)"),
    code("assert container.attrs['State']['Health']['Status'] == 'unhealthy'\n"
         "container.remove(force=True)"),
    md("## 4. Deploy it as a service\n"
       "`%push` puts the image in the lab registry; `%deploy` creates a one-replica Swarm service and returns "
       "only when its task is running **and healthy** (the task stays `starting` until the check passes). "
       "The rollout timeline shows each state the task went through."),
    code("%push web:1\ndeployed = %deploy web:1 --name {name} --replicas 1 --publish 8080\ndeployed"),
    code("deployed.to_frame()[['time', 'node', 'state', 'health', 'message']]"),
    code("from nbops.deploy.swarm import remove\nremove(name)"),
]

cells_01 = [
    md("# Workshop 1 — containerize an app and build it\n\n"
       "A **Dockerfile** is the recipe of an image: a base image (`FROM`), then instructions that each add a "
       "**layer** (`RUN`, `COPY`...) or set metadata (`ENV`, `CMD`, `HEALTHCHECK`...). `docker build` runs "
       "the recipe and caches every step, so a rebuild only redoes what changed.\n\n"
       "What you will see:\n"
       "1. a `%%dockerfile` cell, checked as you write it: **lint findings** (hadolint and nbops' own rules), "
       "and how to fix one;\n"
       "2. `%build` with its **per-instruction profile**: how long each step took and how big a layer it made;\n"
       "3. a rebuild that is all **cache hits**;\n"
       "4. **build arguments**: one Dockerfile, two images — and why the order of instructions decides what "
       "the cache can reuse;\n"
       "5. the profile as a plot.\n\n"
       "Nothing is fetched from the internet: the base image `nbops/busybox` is built by the lab itself."),
    code('name = "ws1-app"      # the image repository this notebook builds\n'
         'out_dir = "out"       # where the plot is written'),
    md("## 1. The lab\n"
       "`%nbops lab up` starts (or reuses) the local lab: a Docker engine, a registry and a one-node swarm, "
       "all on your machine."),
    code("import os\nos.makedirs(out_dir, exist_ok=True)\n%load_ext nbops\n%nbops lab up"),
    md("## 2. Write a Dockerfile — and read what the linter says\n"
       "`%%dockerfile app` stores the cell as the Dockerfile named `app` and checks it at once. A syntax error "
       "would stop here with the line number; everything else is shown as **findings** with a level and a rule "
       "id you can look up (`DL...` rules are hadolint's, `NB...` nbops').\n\n"
       "This first draft has a few classic mistakes."),
    code("%%dockerfile app\nFROM nbops/busybox\nWORKDIR /app\n"
         "RUN cd /app && dd if=/dev/zero of=data.bin bs=1k count=256\n"
         "ARG greeting=hello\n"
         'RUN echo "${greeting} from the workshop" > /app/index.html\n'
         "HEALTHCHECK --interval=5s CMD test -f /app/index.html\n"
         "CMD httpd -f -p 8080 -h /app"),
    md("The result of the cell is a Python object too: `_` is the last result, and `.findings` is a DataFrame."),
    code("draft = _\ndraft.findings[['line', 'rule', 'level', 'message']]"),
    md("Two of them are easy to fix:\n"
       "* **DL3003** — `RUN cd /app && ...`: the directory is already `/app` thanks to `WORKDIR`; `cd` in a "
       "`RUN` lasts only for that one command and hides where files land.\n"
       "* **DL3025** — `CMD httpd ...` in *shell form* runs `/bin/sh -c \"httpd ...\"`: the shell is PID 1 and "
       "`docker stop`'s SIGTERM never reaches httpd. The JSON (*exec*) form runs httpd directly. The same rule "
       "flags the `HEALTHCHECK`'s command (line 7): in exec form no shell is started for every check.\n\n"
       "**NB006** stays: the lab's base image only has the tag `latest`. In a real project you would pin a "
       "version (`FROM busybox:1.36`) or a digest so that a rebuild gives the same image."),
    code("%%dockerfile app\nFROM nbops/busybox\nWORKDIR /app\n"
         "RUN dd if=/dev/zero of=data.bin bs=1k count=256\n"
         "ARG greeting=hello\n"
         'RUN echo "${greeting} from the workshop" > /app/index.html\n'
         'HEALTHCHECK --interval=5s CMD ["test", "-f", "/app/index.html"]\n'
         'CMD ["httpd", "-f", "-p", "8080", "-h", "/app"]'),
    code("fixed = _\nprint('before:', sorted(draft.lint().rules()))\nprint('after: ', sorted(fixed.lint().rules()))\n"
         "assert {'DL3003', 'DL3025'} <= draft.lint().rules() and not {'DL3003', 'DL3025'} & fixed.lint().rules()"),
    md("The same checks work outside a notebook: `nbops.dockerfile.lint(text)` returns the findings, and "
       "`nbops lint Dockerfile` is the command-line version for CI."),
    md("## 3. Build it, with the profile\n"
       "`%build app -t NAME:TAG` builds the stored Dockerfile. The result shows the image, and one row per "
       "instruction: how long it took, whether it came from the **cache**, and the size of the layer it added. "
       "`FROM` reuses the base's layers; `WORKDIR`, `ARG`, `CMD`, `HEALTHCHECK` only change the image's "
       "configuration (no or empty layers); the `dd` step makes the big layer. `--no-cache` makes every "
       "step of *this* Dockerfile run again (the base image itself is never rebuilt)."),
    code("first = %build app -t {name}:1 --no-cache\nfirst"),
    code("assert not any(s.cached for s in first.steps if s.instruction.startswith(('WORKDIR', 'RUN')))\n"
         "first.to_frame()[['step', 'instruction', 'duration_s', 'cached', 'layer_size']]"),
    md("## 4. Build again: everything comes from the cache\n"
       "Nothing changed — not the Dockerfile, not the build context, not the base — so every step that makes "
       "a layer (`WORKDIR`, the two `RUN`s) is a cache hit and the same image comes out, in a fraction of the "
       "time. (`ARG`, `HEALTHCHECK` and `CMD` only set configuration, so they have no cache state; `FROM` "
       "shows whether BuildKit found the base already prepared.)"),
    code("again = %build app -t {name}:1\n"
         "print(again)\n"
         "assert again.image_id == first.image_id\n"
         "assert all(s.cached for s in again.steps if s.instruction.startswith(('WORKDIR', 'RUN')))\n"
         "again.to_frame()[['step', 'instruction', 'cached']]"),
    md("## 5. Build arguments\n"
       "`ARG greeting=hello` declares a **build argument** with a default; `--build-arg greeting=bonjour` "
       "changes it for one build. The cache key of every step *after* the `ARG` includes its value, so those "
       "steps run again — but the `dd` step comes *before* it and stays cached. That is why the slow, rarely "
       "changing steps go first in a Dockerfile."),
    code("french = %build app -t {name}:2 --build-arg greeting=bonjour\n"
         "runs = {s.instruction.split()[1]: s.cached for s in french.steps if s.instruction.startswith('RUN')}\n"
         "print('RUN steps cached:', runs)\n"
         "assert runs == {'dd': True, 'echo': False}\n"
         "french.to_frame()[['step', 'instruction', 'duration_s', 'cached']]"),
    code("from nbops.engine import Engine\n\n"
         "engine = Engine.connect()\n"
         "pages = {tag: engine.client.containers.run(f'{name}:{tag}', ['cat', '/app/index.html'], remove=True)"
         ".decode().strip()\n"
         "         for tag in (1, 2)}\n"
         "pages"),
    md("## 6. The profile as a plot\n"
       "`.plot()` draws the profile (duration per instruction, cache hits marked); pass `ax=` to put it in "
       "your own figure. Here: the first build, without cache, next to the build with the new argument."),
    code("import matplotlib.pyplot as plt\n\n"
         "fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))\n"
         "first.plot(ax=axes[0]); axes[0].set_title('first build (no cache)')\n"
         "french.plot(ax=axes[1]); axes[1].set_title('--build-arg greeting=bonjour')\n"
         "fig.savefig(f'{out_dir}/build-profile.png', bbox_inches='tight', dpi=110)"),
    md("Every build is also recorded in the history store: `%nbops history builds` lists them, with their "
       "durations and cache hits, across notebook runs."),
    code("builds = %nbops history builds\nbuilds[['time', 'tags', 'builder', 'duration_s', 'size', 'n_layers']].tail(3)"),
]

cells_02 = [
    md("# Workshop 2 — layers: where the bytes go, and squashing\n\n"
       "An image is a stack of **layers**; each `RUN`/`COPY` adds one, holding the files that step created, "
       "changed — or deleted. A file deleted in a later layer is only *hidden*: its bytes are still in the "
       "image, downloaded by everyone who pulls it.\n\n"
       "What you will see:\n"
       "1. an image built the wasteful way, and `%layers` on it: the size of every layer;\n"
       "2. the **wasted bytes** — as [dive](https://github.com/wagoodman/dive) counts them, and the bytes that "
       "are truly hidden — and, for each, **which layer added it and which removed it**;\n"
       "3. the same Dockerfile built with `--squash`: size and layer count before and after;\n"
       "4. `nbops.layers.diff`: what changed, file by file, between two versions of an image."),
    code('name = "ws2-fat"      # the image repository this notebook builds\n'
         'out_dir = "out"'),
    md("## 1. The lab, and a wasteful Dockerfile\n"
       "Step 2 writes a 1 MB file, step 3 a 512 kB temporary file, step 4 deletes both, step 5 writes "
       "`/version.txt` again. The final filesystem holds a few bytes more than the base — but the image does "
       "not shrink when files are deleted."),
    code("import os\nos.makedirs(out_dir, exist_ok=True)\n%load_ext nbops\n%nbops lab up"),
    code("%%dockerfile fat\nFROM nbops/busybox\n"
         "RUN dd if=/dev/zero of=/big.bin bs=1k count=1024\n"
         "RUN echo 'version 1' > /version.txt && dd if=/dev/zero of=/cache.tmp bs=1k count=512\n"
         "RUN rm /big.bin /cache.tmp\n"
         "ARG version=1\n"
         "RUN echo \"version ${version} (final)\" > /version.txt\n"
         "HEALTHCHECK NONE\n"
         'CMD ["cat", "/version.txt"]'),
    code("fat = %build fat -t {name}:1\nfat"),
    md("## 2. `%layers`: size per layer, wasted and hidden bytes\n"
       "`%layers IMAGE` reads every layer's file list (from the engine's storage, else `docker save`; results "
       "are cached by layer digest) and stacks them like the overlay filesystem does. Per layer: its size, the "
       "bytes it added or replaced, the bytes of it a later layer hides, and the bytes of lower layers it "
       "removes."),
    code("rep = %layers {name}:1\nrep"),
    code("rep.to_frame()[['instruction', 'size', 'files', 'bytes_added', 'bytes_hidden_later', 'bytes_removed']]"),
    md("Two numbers for the waste:\n"
       "* **dive's wasted bytes** (`rep.wasted_bytes`, with `rep.efficiency`): for every path that appears in "
       "more than one layer, dive adds up the sizes of *all* its versions — the last, visible one included "
       "(see `/version.txt` in `rep.inefficiencies()` below: both versions count). It is the number CI tools "
       "compare against a threshold, so nbops reproduces it exactly.\n"
       "* **truly hidden bytes** (`rep.hidden_bytes`): the file versions no one can see in the final "
       "filesystem, but that are still shipped.\n\n"
       "`rep.wasted()` lists the hidden versions, largest first, with the layer that **added** each one and the "
       "layer that **removed** (or overwrote) it — the line of the Dockerfile to change."),
    code("print(f'dive: efficiency {rep.efficiency:.1%}, wasted {rep.wasted_bytes} bytes')\n"
         "print(f'truly hidden: {rep.hidden_bytes} bytes')\n"
         "rep.wasted()[['path', 'size', 'added_by_instruction', 'removed_by_instruction', 'how']]"),
    code("rep.inefficiencies().head()   # dive's own list: paths seen in several layers"),
    md("The fix in a Dockerfile is to create and delete temporary files **in the same `RUN`** (or to use a "
       "multi-stage build). When you cannot change the Dockerfile — or want one layer anyway — you can "
       "**squash** the image."),
    md("## 3. Squash\n"
       "`%build --squash` merges the layers the Dockerfile added into **one** layer, applying the deletions "
       "(the files they hid are gone for good). The base image's layers are kept as they are, so images built "
       "on the same base still share them. The image's configuration (`CMD`, `HEALTHCHECK`...) is kept. "
       "(`nbops.build.squash(engine, image)` does the same to an image already built.)"),
    code("flat = %build fat -t {name}:squashed --squash\nflat.squashed"),
    code("flat.squashed.to_frame()"),
    code("rep_flat = %layers {name}:squashed\n"
         "print(rep_flat)\n"
         "assert flat.squashed.layers_after < flat.squashed.layers_before\n"
         "assert flat.squashed.size_after < flat.squashed.size_before - 1_000_000\n"
         "assert rep_flat.hidden_bytes == 0\n"
         "rep_flat.to_frame()[['instruction', 'size', 'files']]"),
    code("from nbops.engine import Engine\n\n"
         "engine = Engine.connect()\n"
         "engine.client.containers.run(f'{name}:squashed', remove=True).decode().strip()   # still runs its CMD"),
    md("## 4. What changed between two versions\n"
       "A new version only changes the last step (`--build-arg version=2`). `nbops.layers.diff(a, b)` compares "
       "the two stacked filesystems: the layers they **share** (pulled once, stored once), and each path "
       "added, removed or changed, with the layer of `b` that did it."),
    code("v2 = %build fat -t {name}:2 --build-arg version=2.0.1\n"
         "import nbops.layers\n\n"
         "d = nbops.layers.diff(f'{name}:1', f'{name}:2')\n"
         "d"),
    code("print(d.summary())\nd.to_frame()[['path', 'change', 'size_a', 'size_b', 'instruction_b']]"),
    code("d_sq = nbops.layers.diff(f'{name}:1', f'{name}:squashed')\n"
         "print(d_sq)\n"
         "d_sq.to_frame()[['path', 'change', 'size_a', 'size_b']]"),
    md("Squashing has a price: the squashed image shares only the base with the others, so every new version "
       "ships all its own bytes again — while the unsquashed versions shared all but their last layer."),
    code("builds = %nbops history builds\nbuilds[['time', 'tags', 'duration_s', 'size', 'n_layers']].tail(3)"),
]

cells_03 = [
    md("# Workshop 3 — a registry, names, and moving images around\n\n"
       "A **registry** stores images by repository and tag; each pushed image also gets a **digest** "
       "(`sha256:...` of its manifest) that never changes — a tag can be moved, a digest cannot.\n\n"
       "What you will see:\n"
       "1. `%push` to the lab registry, with the digest **verified** against what the registry serves;\n"
       "2. browsing the registry: repositories, tags, digests;\n"
       "3. a **naming scheme** rendered from git state: a release tag when HEAD is tagged, the commit sha "
       "otherwise;\n"
       "4. a **policy**: the mutable `latest` tag is refused for a protected registry;\n"
       "5. `%pull` back, digest checked;\n"
       "6. an image as a file: export to an archive with its checksum, and load it back — for machines "
       "with no registry access."),
    code('name = "ws3-app"      # the image repository this notebook pushes\n'
         'out_dir = "out"       # where the archive is written\n'
         'work_dir = ""         # a scratch git repository for the naming scheme; "" = a new temp directory'),
    md("## 1. An image, pushed\n"
       "`%push IMAGE` tags the image for the lab registry and pushes it. The result lists each layer as "
       "**pushed**, **exists** or **mounted** (a registry stores each layer once, by its digest: the base's layers "
       "are already there under `nbops/busybox`, so they are only linked into the new repository), and the manifest "
       "digest the engine reported — checked against the registry's own answer."),
    code("import os, subprocess, tempfile\nout_dir = os.path.abspath(out_dir)\nos.makedirs(out_dir, exist_ok=True)\n"
         "%load_ext nbops\n%nbops lab up"),
    code("%%dockerfile app\nFROM nbops/busybox\nRUN echo 'registry workshop' > /index.html\n"
         "HEALTHCHECK NONE\n"
         'CMD ["cat", "/index.html"]'),
    code("built = %build app -t {name}:1.0.0\npushed = %push {name}:1.0.0\npushed"),
    code("registry = pushed.ref.split('/')[0]\n"
         "print('digest  :', pushed.digest, '(verified)' if pushed.verified else '(NOT verified)')\n"
         "print('pin with:', pushed.pinned)\n"
         "pushed.to_frame()"),
    md("Push the same image again: every layer is already there, nothing is sent, and the digest is the same."),
    code("again = %push {name}:1.0.0\nprint(again)\nassert again.digest == pushed.digest and again.bytes_sent == 0"),
    md("## 2. Browse the registry\n"
       "`%nbops registry repos` lists the repositories and their tags (the registry's `/v2/_catalog` API); "
       "`%nbops registry tags REPO` shows each tag's digest, number of layers and compressed size."),
    code("repos = %nbops registry repos\nrepos[repos.repository.str.startswith('ws')]"),
    code("%nbops registry tags {name}"),
    md("## 3. A naming scheme from git\n"
       "Typing tags by hand ends with `v2-final-really`. A **template** declares the scheme once; nbops fills "
       "it from the git state of the working directory:\n\n"
       "`{registry}/{team}/{name}:{git_tag|git_sha}` — `{a|b}` takes the first non-empty field: the git tag "
       "on HEAD if there is one *and the tree is clean*, else the short commit sha.\n\n"
       "We make a small git repository to try it (in a scratch directory; the template reads the git state of "
       "the notebook's working directory, so we move there)."),
    code("home = os.getcwd()\n"
         "scratch = not work_dir                 # made here: removed again at the end\n"
         "work_dir = work_dir or tempfile.mkdtemp(prefix='ws3-git-')\n"
         "os.makedirs(work_dir, exist_ok=True)\nos.chdir(work_dir)\n\n"
         "def git(*args):\n"
         "    return subprocess.run(['git', *args], check=True, capture_output=True, text=True, timeout=20).stdout.strip()\n\n"
         "git('init', '-q')\ngit('config', 'user.email', 'you@example.com')\ngit('config', 'user.name', 'Workshop')\n"
         "open('app.txt', 'w').write('release one\\n')\n"
         "git('add', 'app.txt')\ngit('commit', '-q', '-m', 'first release')\ngit('tag', 'v1.2.0')\n"
         "git('log', '--oneline', '--decorate')"),
    code("%config NbopsMagics.name_template = '{registry}/{team}/{name}:{git_tag|git_sha}'\n"
         "%config NbopsMagics.team = 'workshop'\n"
         "%nbops name {name}:1.0.0"),
    md("HEAD carries the tag `v1.2.0`, so that is the image's tag. Now a new commit without a tag: the name "
       "falls back to the commit's sha. An uncommitted change (a *dirty* tree) also gives the sha — "
       "a dirty tree is not the release."),
    code("open('app.txt', 'a').write('a fix\\n')\n"
         "git('commit', '-q', '-am', 'a fix')\n"
         "sha = git('rev-parse', '--short=12', 'HEAD')\n"
         "by_sha = %nbops name {name}:1.0.0\n"
         "print(by_sha)\nassert by_sha.endswith(':' + sha)"),
    code("git('tag', 'v1.2.1')\n"
         "open('app.txt', 'a').write('not committed yet\\n')\n"
         "print('dirty :', get_ipython().run_line_magic('nbops', f'name {name}:1.0.0'))\n"
         "git('checkout', '-q', '--', 'app.txt')\n"
         "print('clean :', get_ipython().run_line_magic('nbops', f'name {name}:1.0.0'))"),
    md("With a template set, `%push IMAGE` (no `--to`) pushes to the rendered name."),
    code("release = %push {name}:1.0.0\nprint(release)\nassert release.ref.endswith('/workshop/' + name + ':v1.2.1')"),
    md("## 4. A policy: no `latest` on a protected registry\n"
       "`latest` is just a tag that moves: what it means today is not what it meant yesterday, so a deployment "
       "that pulls `latest` is not reproducible. Declare the registry protected and `%push` refuses it — with "
       "one line saying why and what to do (the full error stays in `%nbops error`). In Jupyter this shows as "
       "a red `UsageError` line; here we catch it to print it."),
    code("from IPython.core.error import UsageError\n\n"
         "%config NbopsMagics.protected_registries = [registry]\n"
         "try:\n"
         "    %push {name}:1.0.0 --to {registry}/{name}:latest\n"
         "    refused = None\n"
         "except UsageError as err:\n"
         "    refused = str(err)\n"
         "    print('UsageError:', refused)\n"
         "assert refused and 'protected registry' in refused"),
    md("Release tags like `1.0.0` are also **immutable** by default: pushing different content to an existing "
       "`1.0.0` is refused in the same way — release a new version instead."),
    md("## 5. Pull it back\n"
       "We delete the image from the engine and pull it from the registry (`--tag` also gives it back its short "
       "local name). The digest is checked again: what arrives is what was pushed. Each layer is downloaded only "
       "if the engine lacks it — here the engine's *build cache* still holds them all, so the table says so "
       "and only the manifest and the image config travel. On another machine, the layers would come too."),
    code("from nbops.engine import Engine\n\nengine = Engine.connect()\n"
         "engine.client.images.remove(built.image_id, force=True)   # every tag of it, the image is gone\n"
         "pulled = %pull {registry}/{name}:1.0.0 --tag {name}:1.0.0\npulled"),
    code("print(pulled.digest == pushed.digest, pulled.image_id == built.image_id)\n"
         "assert pulled.digest == pushed.digest and pulled.image_id == built.image_id"),
    md("## 6. An image as a file\n"
       "Where no registry is reachable (an air-gapped machine, a USB stick), an image travels as an archive: "
       "`%push IMAGE --to archive:PATH` writes `docker save`'s format (gzip when the name ends in `.gz`) and a "
       "`.sha256` checksum beside it; `%pull archive:PATH` checks the checksum, loads the archive and checks "
       "the image id."),
    code("archived = %push {name}:1.0.0 --to archive:{out_dir}/{name}.tar.gz\narchived"),
    code("print(open(archived.checksum_file).read())\n"
         "engine.client.images.remove(built.image_id, force=True)    # gone from the engine...\n"
         "loaded = %pull archive:{out_dir}/{name}.tar.gz\n"
         "loaded"),
    code("print(loaded.verified, loaded.image_id == built.image_id)\n"
         "assert loaded.verified and loaded.image_id == built.image_id\n"
         "engine.client.containers.run(f'{name}:1.0.0', remove=True).decode().strip()   # ...and back"),
    md("`%nbops history pushes` and `%nbops history pulls` keep every transfer of every run: reference, "
       "digest, bytes, time."),
    code("import shutil\n\nos.chdir(home)\n"
         "if scratch:\n    shutil.rmtree(work_dir, ignore_errors=True)\n"
         "%config NbopsMagics.name_template = None\n"
         "%config NbopsMagics.protected_registries = []\n"
         "pushes = %nbops history pushes\n"
         "pushes[['time', 'ref', 'digest', 'verified', 'bytes_sent']].tail(4)"),
]

for filename, notebook_cells in (("01-containerize-and-build.ipynb", cells_01),
                                 ("02-layers-and-squashing.ipynb", cells_02),
                                 ("03-registry-and-naming.ipynb", cells_03),
                                 ("04-deploy-with-healthcheck.ipynb", cells_04),
                                 ("05-swarm-on-three-nodes.ipynb", cells)):
    nb = nbf.v4.new_notebook(cells=notebook_cells, metadata={"kernelspec": {
        "name": "python3", "display_name": "Python 3", "language": "python"}})
    nb.cells[1].metadata["tags"] = ["parameters"]
    nb.cells[-1].metadata["tags"] = ["cleanup"]
    out = Path(__file__).resolve().parents[1] / "notebooks" / "workshop" / filename
    out.parent.mkdir(parents=True, exist_ok=True)
    nbf.write(nb, str(out))
    print(out)
