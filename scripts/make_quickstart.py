"""Writes notebooks/00-quickstart.ipynb (kept as code so the notebook's source is reviewable)."""

import nbformat as nbf

md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell
cells = [
    md("# nbops quickstart: Build → Distribute → Deploy\n\n"
       "The three steps of the talk *Docker in production*, on a real Docker Engine, a real registry and a "
       "real Swarm — the local lab nbops starts for you (`nbops lab up`). Every step returns an object: "
       "it shows itself as a table, gives a pandas DataFrame with `.to_frame()`, and is recorded in the "
       "history store so runs can be compared later."),
    code('tag = "1"            # image tag to build and release\n'
         'service = "web"      # swarm service name\n'
         'replicas = 2\n'
         'out_dir = "out"      # where plots are written'),
    md("## 0. Load the extension and make sure the lab is up\n"
       "`%nbops lab up` is harmless when the lab is already running; it prints the nodes, the registry and "
       "the engine versions."),
    code("import os\nos.makedirs(out_dir, exist_ok=True)\n%load_ext nbops\n%nbops lab up"),
    md("## 1. Build\nA Dockerfile lives in a named cell. `{tag}` is filled from the notebook's variables, so "
       "papermill parameters flow into the image. The base image `nbops/busybox` is made FROM scratch by the "
       "lab (no Docker Hub needed). The HEALTHCHECK is what the deploy step waits for."),
    code('%%dockerfile hello\nFROM nbops/busybox\nRUN echo "hello from release {tag}" > /index.html\n'
         'HEALTHCHECK --interval=2s --timeout=2s --retries=3 CMD test -f /index.html\n'
         'CMD ["httpd", "-f", "-p", "8080", "-h", "/"]'),
    code("build = %build hello -t hello:{tag}\nbuild"),
    md("The profile: one row per Dockerfile instruction — how long it took, whether the cache served it, and "
       "how many bytes its layer added."),
    code("build.to_frame()"),
    code("ax = build.plot()\nax.figure.savefig(f'{out_dir}/build-profile.png', bbox_inches='tight', dpi=110)"),
    md("## 2. Distribute\n`%push` tags the image for the lab registry and pushes it; the digest the registry "
       "serves is checked against the one the engine pushed."),
    code("pushed = %push hello:{tag}\npushed"),
    code("pushed.to_frame()"),
    md("## 3. Deploy\nA Swarm service with `replicas` tasks, pinned to the pushed digest. Each task publishes "
       "port 8080 on its own host port (no ingress mesh on this machine). `%deploy` returns when every "
       "replica's HEALTHCHECK passes, or fails with one clear line."),
    code("deployed = %deploy hello:{tag} --name {service} --replicas {replicas} --publish 8080\ndeployed"),
    code("deployed.to_frame()[['time', 'task', 'slot', 'node', 'state', 'health', 'message']]"),
    code("ax = deployed.plot()\nax.figure.savefig(f'{out_dir}/rollout-timeline.png', bbox_inches='tight', dpi=110)"),
    md("## 4. Verify\nAsk every task for its page — a bounded number of requests, to the lab's own addresses only."),
    code("import urllib.request\n\nanswers = {}\nfor address, port in deployed.endpoints:\n"
         "    with urllib.request.urlopen(f'http://{address}:{port}/', timeout=3) as resp:\n"
         "        answers[f'{address}:{port}'] = resp.read().decode().strip()\nanswers"),
    code("assert len(answers) == replicas and all(a == f'hello from release {tag}' for a in answers.values()), answers"),
    md("## 5. Everything is tracked\nBuilds, pushes and deploys land in the history store (SQLite)."),
    code("%nbops history builds"),
    code("from nbops.deploy.swarm import remove\nremove(service)"),
]
nb = nbf.v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
nb.cells[1].metadata["tags"] = ["parameters"]
nb.cells[-1].metadata["tags"] = ["cleanup"]
nbf.write(nb, "notebooks/00-quickstart.ipynb")
