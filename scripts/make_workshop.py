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

for filename, notebook_cells in (("04-deploy-with-healthcheck.ipynb", cells_04),
                                 ("05-swarm-on-three-nodes.ipynb", cells)):
    nb = nbf.v4.new_notebook(cells=notebook_cells, metadata={"kernelspec": {
        "name": "python3", "display_name": "Python 3", "language": "python"}})
    nb.cells[1].metadata["tags"] = ["parameters"]
    nb.cells[-1].metadata["tags"] = ["cleanup"]
    out = Path(__file__).resolve().parents[1] / "notebooks" / "workshop" / filename
    out.parent.mkdir(parents=True, exist_ok=True)
    nbf.write(nb, str(out))
    print(out)
