"""Static checks of deploy/ for scripts/deploy-check (run with the check's venv python).

Usage: deploy_check.py COMMAND REPO_ROOT [ARGS...]

  compose-files CONFIG_YAML     every secret file and bind-mount source compose resolves exists
  settings                      every AUTHORIZER__*/RECONCILER__* name used in compose and the
                                k8s manifests is a real setting; reconciler.production.toml keys
                                exist; secret and config map references resolve
  kustomization                 resources exist, every manifest is listed (or an example),
                                every container image is mapped by `images:`
  dashboard                     the Grafana JSON parses, panels are well-formed, and every metric
                                and label it queries exists in the code or on the coming list
  env-of WHAT                   prints NAME=VALUE lines for the runtime smoke test
                                (WHAT: compose-authorizer, compose-reconciler, k8s-authorizer,
                                k8s-reconciler); placeholder secrets come from the examples
  k8s-scrape OUT                checks the kubernetes_sd_configs of deploy/prometheus/scrape-kubernetes.yml
                                and writes a copy with a static target instead, for promtool
  lb send PORT TXID KEY | lb count PORT | lb get PORT PATH
                                the load-balancing smoke: a signed balance inquiry with the
                                example key pair (prints the HTTP status), a replica's
                                authorizer_requests_total, a GET's status
  data-of KIND NAME KEY         prints one key of a ConfigMap or Secret of deploy/k8s

Each check prints what it checked; a problem is printed as "FAIL: ..." and exits 1.
"""

import glob
import json
import os
import re
import sys
import tomllib

import yaml

FAILS = []


def fail(msg):
    FAILS.append(msg)
    print(f"FAIL: {msg}")


def done(what):
    if FAILS:
        sys.exit(1)
    print(f"ok: {what}")


def load_yaml_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def k8s_docs(root):
    docs = []
    for path in sorted(glob.glob(os.path.join(root, "deploy/k8s/*.yaml"))):
        if os.path.basename(path) == "kustomization.yaml":
            continue
        for d in load_yaml_docs(path):
            docs.append((os.path.basename(path), d))
    return docs


def pod_spec(doc):
    kind = doc.get("kind")
    spec = doc.get("spec", {})
    if kind in ("Deployment", "Job", "StatefulSet", "DaemonSet"):
        return spec["template"]["spec"]
    if kind == "CronJob":
        return spec["jobTemplate"]["spec"]["template"]["spec"]
    return None


# ------------------------------------------------------------------------- settings --


def toml_keys(text):
    """Every dotted key path of a TOML document (tables and values)."""
    out = set()

    def walk(t, prefix):
        for k, v in t.items():
            p = f"{prefix}.{k}" if prefix else k
            out.add(p)
            if isinstance(v, dict):
                walk(v, p)

    walk(tomllib.loads(text), "")
    return out


def env_setting(name, prefix):
    """AUTHORIZER__SERVER__LISTEN -> server.listen (None when not prefixed)."""
    if not name.startswith(prefix):
        return None
    return ".".join(p.lower() for p in name[len(prefix):].split("__"))


def check_env_names(where, names, auth_keys, recon_keys):
    for raw in names:
        name = raw[: -len("_FILE")] if raw.endswith("_FILE") else raw
        for prefix, keys in (("AUTHORIZER__", auth_keys), ("RECONCILER__", recon_keys)):
            path = env_setting(name, prefix)
            if path is not None and path not in keys:
                fail(f"{where}: {raw} names no setting ({path} is not in the defaults)")


def cmd_settings(root):
    with open(os.path.join(root, "config/default.toml")) as f:
        auth_keys = toml_keys(f.read())
    with open(os.path.join(root, "config/reconciler.toml")) as f:
        recon_keys = toml_keys(f.read())
    # processor.keys is a list of tables allowed in files only.
    auth_keys |= {"processor.keys"}
    checked = 0

    # compose: the environment of every service
    with open(os.path.join(root, "deploy/compose.yaml")) as f:
        compose = yaml.safe_load(f)
    for svc, s in compose["services"].items():
        env = s.get("environment") or {}
        names = list(env) if isinstance(env, dict) else [e.split("=", 1)[0] for e in env]
        check_env_names(f"compose.yaml service {svc}", names, auth_keys, recon_keys)
        checked += len(names)
        for n in names:
            if n.endswith("_FILE") and not env[n].startswith("/run/secrets/"):
                fail(f"compose.yaml service {svc}: {n} should name a file under /run/secrets/")
            if n.endswith("_FILE"):
                secret = env[n][len("/run/secrets/"):]
                if secret not in (s.get("secrets") or []):
                    fail(f"compose.yaml service {svc}: {n} reads secret '{secret}' the service does not mount")

    # k8s: config maps, secrets, env of every container
    docs = k8s_docs(root)
    configmaps = {d["metadata"]["name"]: d.get("data", {}) for _, d in docs if d["kind"] == "ConfigMap"}
    secrets = {}
    for _, d in docs:
        if d["kind"] == "Secret":
            secrets[d["metadata"]["name"]] = {**(d.get("stringData") or {}), **(d.get("data") or {})}
    for name, data in configmaps.items():
        check_env_names(f"ConfigMap {name}", [k for k in data if re.fullmatch(r"[A-Z_][A-Z0-9_]*", k)], auth_keys, recon_keys)
        checked += len(data)
        for key, text in data.items():
            if key.startswith("reconciler.") and key.endswith(".toml"):
                for k in toml_keys(text):
                    if k not in recon_keys:
                        fail(f"ConfigMap {name} {key}: '{k}' is not a reconciler setting")
    for name, data in secrets.items():
        for key, text in data.items():
            if key.endswith(".toml"):
                for k in toml_keys(text):
                    if k not in auth_keys:
                        fail(f"Secret {name} {key}: '{k}' is not an authorizer setting")
            elif re.fullmatch(r"[A-Z_][A-Z0-9_]*", key):
                check_env_names(f"Secret {name}", [key], auth_keys, recon_keys)
    for fname, d in docs:
        spec = pod_spec(d)
        if spec is None:
            continue
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for c in spec.get("initContainers", []) + spec["containers"]:
            where = f"{fname} {d['kind']}/{d['metadata']['name']} container {c['name']}"
            names = [e["name"] for e in c.get("env", [])]
            check_env_names(where, names, auth_keys, recon_keys)
            checked += len(names)
            for e in c.get("env", []):
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if ref and ref["key"] not in secrets.get(ref["name"], {}):
                    fail(f"{where}: env {e['name']} reads {ref['name']}/{ref['key']}, which secret.example.yaml does not define")
                ref = (e.get("valueFrom") or {}).get("configMapKeyRef")
                if ref and ref["key"] not in configmaps.get(ref["name"], {}):
                    fail(f"{where}: env {e['name']} reads missing ConfigMap key {ref['name']}/{ref['key']}")
            for ef in c.get("envFrom", []):
                ref = ef.get("configMapRef") or ef.get("secretRef")
                pool = configmaps if "configMapRef" in ef else secrets
                if ref["name"] not in pool:
                    fail(f"{where}: envFrom {ref['name']} is not defined")
            ports = {p.get("name") for p in c.get("ports", [])} | {p["containerPort"] for p in c.get("ports", [])}
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                get = (c.get(probe) or {}).get("httpGet")
                if get and get["port"] not in ports:
                    fail(f"{where}: {probe} uses port {get['port']!r}, which the container does not declare")
                if get and get["path"] not in ("/healthz", "/readyz"):
                    fail(f"{where}: {probe} path {get['path']} is not /healthz or /readyz")
            for m in c.get("volumeMounts", []):
                if m["name"] not in volumes:
                    fail(f"{where}: mounts undefined volume {m['name']}")
            sc = c.get("securityContext", {})
            if not (sc.get("readOnlyRootFilesystem") and sc.get("allowPrivilegeEscalation") is False
                    and sc.get("capabilities", {}).get("drop") == ["ALL"]):
                fail(f"{where}: needs readOnlyRootFilesystem, allowPrivilegeEscalation: false, drop ALL")
        psc = spec.get("securityContext", {})
        if not (psc.get("runAsNonRoot") and psc.get("runAsUser", 0) != 0):
            fail(f"{fname} {d['kind']}/{d['metadata']['name']}: pod must run as a non-root uid")
        for v in volumes.values():
            for src, key in (("secret", "secretName"), ("configMap", "name")):
                if src in v:
                    name = v[src][key]
                    pool = secrets if src == "secret" else configmaps
                    if name not in pool:
                        fail(f"{fname}: volume {v['name']} uses undefined {src} {name}")
                    for item in v[src].get("items", []):
                        if item["key"] not in pool.get(name, {}):
                            fail(f"{fname}: volume {v['name']} uses missing key {name}/{item['key']}")
    done(f"settings: {checked} setting names in compose.yaml and deploy/k8s are real settings; references resolve")


# ------------------------------------------------------------------- compose files --


def cmd_compose_files(root, config_path):
    """Reads `compose config` output: every secret file and bind source must exist."""
    with open(config_path) as f:
        cfg = yaml.safe_load(f)
    n = 0
    for name, s in (cfg.get("secrets") or {}).items():
        n += 1
        if not os.path.isfile(s["file"]):
            fail(f"compose secret {name}: {s['file']} does not exist")
    for svc, s in cfg["services"].items():
        for v in s.get("volumes", []):
            if isinstance(v, str):
                src = v.split(":", 1)[0]
                bind = src.startswith("/") or src.startswith(".")
            else:
                src, bind = v.get("source", ""), v.get("type") == "bind"
            if bind:
                n += 1
                if not os.path.exists(src):
                    fail(f"compose service {svc}: bind mount source {src} does not exist")
    done(f"compose files: {n} secret files and bind mounts exist")


# -------------------------------------------------------------------- kustomization --


def cmd_kustomization(root):
    kdir = os.path.join(root, "deploy/k8s")
    with open(os.path.join(kdir, "kustomization.yaml")) as f:
        k = yaml.safe_load(f)
    listed = set(k.get("resources", []))
    for r in sorted(listed):
        if not os.path.isfile(os.path.join(kdir, r)):
            fail(f"kustomization.yaml lists {r}, which does not exist")
    for path in sorted(glob.glob(os.path.join(kdir, "*.yaml"))):
        b = os.path.basename(path)
        if b == "kustomization.yaml" or ".example." in b:
            continue
        if b not in listed:
            fail(f"deploy/k8s/{b} is not listed in kustomization.yaml resources")
    mapped = {i["name"] for i in k.get("images", [])}
    images = set()
    for fname, d in k8s_docs(root):
        if fname not in listed:
            continue
        spec = pod_spec(d)
        if spec:
            for c in spec.get("initContainers", []) + spec["containers"]:
                images.add(c["image"])
    for img in sorted(images - mapped):
        fail(f"container image '{img}' is not mapped under images: in kustomization.yaml")
    ns = [d for _, d in k8s_docs(root) if d["kind"] == "Namespace"]
    if k.get("namespace") not in [d["metadata"]["name"] for d in ns]:
        fail(f"kustomization namespace {k.get('namespace')} has no Namespace manifest")
    done(f"kustomization: {len(listed)} resources, images {sorted(mapped)}")


# ------------------------------------------------------------------------ dashboard --

PROMQL_WORDS = {
    # functions and aggregations used or plausible in the dashboard
    "sum", "avg", "min", "max", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
    "count_values", "group", "rate", "irate", "increase", "delta", "idelta", "deriv",
    "histogram_quantile", "abs", "ceil", "floor", "round", "clamp", "clamp_min", "clamp_max",
    "label_replace", "label_join", "vector", "scalar", "time", "absent", "absent_over_time",
    "avg_over_time", "max_over_time", "min_over_time", "sum_over_time", "count_over_time",
    "last_over_time", "changes", "resets", "sort", "sort_desc", "predict_linear",
    # keywords
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "bool", "offset",
}
# Labels every scrape target has (Prometheus adds them, or the k8s relabeling does).
TARGET_LABELS = {"job", "instance", "pod", "namespace"}
# Series Prometheus itself provides.
BUILTIN_METRICS = {"up": set()}


def code_metrics(root):
    """Metric names the code describes (metrics.rs) and the labels each call site uses."""
    with open(os.path.join(root, "crates/authorizer/src/metrics.rs")) as f:
        described = set(re.findall(r'"(authorizer_[a-z0-9_]+)"', f.read()))
    labels = {m: set() for m in described}
    call = re.compile(r'\.(?:inc|add|observe)\(\s*"(authorizer_[a-z0-9_]+)"\s*,\s*&\[(.*?)\]', re.S)
    for path in glob.glob(os.path.join(root, "crates/authorizer/src/**/*.rs"), recursive=True):
        if path.endswith("metrics.rs"):
            continue
        with open(path) as f:
            text = f.read()
        for name, lab in call.findall(text):
            labels.setdefault(name, set()).update(re.findall(r'\(\s*"([a-z_]+)"\s*,', lab))
    return described, labels


def coming_metrics(root):
    out = {}
    with open(os.path.join(root, "deploy/coming-metrics.txt")) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split()
            out[parts[0]] = set() if parts[1] == "-" else set(parts[1].split(","))
    return out


def strip_strings(expr):
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)


def selectors(expr):
    """(metric, [label names]) for each `metric{...}` and bare metric in a PromQL expr."""
    e = strip_strings(expr)
    e = re.sub(r"\[[^\]]*\]", "", e)  # range selectors [5m], [$__rate_interval]
    out = []
    grouped = set()
    for m in re.finditer(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", e):
        grouped.update(x.strip() for x in m.group(1).split(",") if x.strip())
    e_no_groups = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    for m in re.finditer(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*(\{[^}]*\})?", e_no_groups):
        name, sel = m.group(1), m.group(2)
        rest = e_no_groups[m.end():]
        if name in PROMQL_WORDS or rest.lstrip().startswith("(") and not sel:
            continue
        if name.startswith("$"):
            continue
        labels = re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", sel) if sel else []
        out.append((name, labels))
    return out, grouped


def cmd_dashboard(root):
    path = os.path.join(root, "deploy/grafana/authorizer-dashboard.json")
    with open(path) as f:
        dash = json.load(f)
    described, code_labels = code_metrics(root)
    coming = coming_metrics(root)
    known = {}
    for m in described:
        known[m] = code_labels.get(m, set())
    for m, labs in coming.items():
        known.setdefault(m, labs)
    for m, labs in BUILTIN_METRICS.items():
        known[m] = labs
    ids = set()
    used = set()
    exprs = 0
    panels = []
    for p in dash.get("panels", []):
        panels.append(p)
        panels.extend(p.get("panels", []))
    for p in panels:
        if p.get("id") in ids:
            fail(f"panel id {p.get('id')} is used twice")
        ids.add(p.get("id"))
        if "gridPos" not in p:
            fail(f"panel '{p.get('title')}' has no gridPos")
        if p.get("type") == "row":
            continue
        if not p.get("targets"):
            fail(f"panel '{p.get('title')}' has no query")
        for t in p.get("targets", []):
            expr = t.get("expr", "")
            exprs += 1
            sels, grouped = selectors(expr)
            metrics_here = []
            for name, labels in sels:
                base = re.sub(r"_(bucket|sum|count)$", "", name)
                metric = name if name in known else base if base in known else None
                if metric is None:
                    fail(f"panel '{p['title']}': {name} is neither in metrics.rs nor in deploy/coming-metrics.txt")
                    continue
                metrics_here.append(metric)
                used.add(metric)
                allowed = known[metric] | TARGET_LABELS | ({"le"} if name.endswith("_bucket") else set())
                for lab in labels:
                    if lab not in allowed:
                        fail(f"panel '{p['title']}': {name} has no label '{lab}' (it has {sorted(known[metric])})")
            if not metrics_here:
                fail(f"panel '{p['title']}': query names no metric: {expr}")
            for lab in grouped:
                ok = lab in TARGET_LABELS or any(
                    lab in known[m] or (lab == "le" and m.endswith("_seconds")) for m in metrics_here)
                if not ok:
                    fail(f"panel '{p['title']}': groups by '{lab}', a label none of {metrics_here} has")
    vars_ = {v["name"] for v in dash.get("templating", {}).get("list", [])}
    for v in ("datasource", "job", "instance"):
        if v not in vars_:
            fail(f"dashboard variable ${v} missing")
    unused = sorted(m for m in described if m not in used)
    pending = sorted(m for m in coming if m in described)
    note = f"; not charted: {', '.join(unused)}" if unused else ""
    if pending:
        note += f"; now in the code, drop from coming-metrics.txt: {', '.join(pending)}"
    coming_used = sorted(m for m in used if m in coming and m not in described)
    done(f"dashboard: {len(panels)} panels, {exprs} queries over {len(used)} metrics "
         f"(coming: {', '.join(coming_used) or 'none'}){note}")


# ---------------------------------------------------------------------- env for smoke --


def secret_files(root):
    d = os.path.join(root, "deploy/secrets.example")
    return {n: os.path.join(d, n) for n in os.listdir(d)}


def cmd_env_of(root, what):
    lines = {}
    if what.startswith("compose-"):
        with open(os.path.join(root, "deploy/compose.yaml")) as f:
            compose = yaml.safe_load(f)
        svc = {"compose-authorizer": "authorizer-1", "compose-reconciler": "reconciler"}[what]
        files = secret_files(root)
        for k, v in compose["services"][svc]["environment"].items():
            v = str(v)
            if v.startswith("/run/secrets/"):
                v = files[v[len("/run/secrets/"):]]
            # ${VAR:-default} -> default
            v = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", v)
            lines[k] = v
    else:
        docs = k8s_docs(root)
        cms = {d["metadata"]["name"]: d.get("data", {}) for _, d in docs if d["kind"] == "ConfigMap"}
        secs = {d["metadata"]["name"]: d.get("stringData", {}) for _, d in docs if d["kind"] == "Secret"}
        kind, name = {"k8s-authorizer": ("Deployment", "authorizer"), "k8s-reconciler": ("CronJob", "reconciler")}[what]
        d = next(d for _, d in docs if d["kind"] == kind and d["metadata"]["name"] == name)
        c = pod_spec(d)["containers"][0]
        for ef in c.get("envFrom", []):
            lines.update(cms[ef["configMapRef"]["name"]])
        for e in c.get("env", []):
            if "value" in e:
                lines[e["name"]] = str(e["value"])
            else:
                ref = e["valueFrom"]["secretKeyRef"]
                lines[e["name"]] = secs[ref["name"]][ref["key"]]
    for k, v in lines.items():
        print(f"{k}={v}")


def cmd_k8s_secrets(root):
    """Every setting the authorizer's Secret holds reaches the Deployment's pods: a key only
    in the Secret is never read (an instance would make up its own)."""
    docs = k8s_docs(root)
    secret = next(d for _, d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == "authorizer-secrets")
    deployment = next(d for _, d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "authorizer")
    env = pod_spec(deployment)["containers"][0].get("env", [])
    named = {e["valueFrom"]["secretKeyRef"]["key"] for e in env if "valueFrom" in e}
    keys = [k for k in secret.get("stringData", {}) if k.startswith("AUTHORIZER__")]
    for key in keys:
        if key not in named:
            fail(f"deployment.yaml: {key} of the authorizer-secrets Secret reaches no pod")
    done(f"k8s: the {len(keys)} AUTHORIZER__ settings of the authorizer-secrets Secret reach the pods")


def cmd_k8s_scrape(root, out):
    with open(os.path.join(root, "deploy/prometheus/scrape-kubernetes.yml")) as f:
        cfg = yaml.safe_load(f)
    namespaces = {d["metadata"]["name"] for _, d in k8s_docs(root) if d["kind"] == "Namespace"}
    for job in cfg["scrape_configs"]:
        for sd in job.pop("kubernetes_sd_configs", []):
            if sd.get("role") not in ("node", "service", "pod", "endpoints", "endpointslice", "ingress"):
                fail(f"job {job['job_name']}: kubernetes_sd_configs role {sd.get('role')!r} is not a role")
            extra = set(sd) - {"role", "namespaces", "selectors", "api_server", "kubeconfig_file", "attach_metadata"}
            if extra:
                fail(f"job {job['job_name']}: unknown kubernetes_sd_configs keys {sorted(extra)}")
            for ns in (sd.get("namespaces") or {}).get("names", []):
                if ns not in namespaces:
                    fail(f"job {job['job_name']}: namespace {ns} is not the one deploy/k8s creates ({sorted(namespaces)})")
            job.setdefault("static_configs", []).append({"targets": ["127.0.0.1:8080"]})
    # The annotations the relabeling reads must be on the Deployment's pods.
    dep = next(d for _, d in k8s_docs(root) if d["kind"] == "Deployment")
    ann = dep["spec"]["template"]["metadata"].get("annotations", {})
    for key in ("prometheus.io/scrape", "prometheus.io/port", "prometheus.io/path"):
        if key not in ann:
            fail(f"deployment.yaml pod template lacks the annotation {key} the scrape example relabels on")
    with open(out, "w") as f:
        yaml.safe_dump(cfg, f)
    done("scrape-kubernetes.yml: discovery block and the pods' prometheus.io annotations")


def cmd_lb(root, args):
    import base64
    import hashlib
    import hmac
    import http.client
    import time

    def conn(port):
        return http.client.HTTPConnection("127.0.0.1", int(port), timeout=10)

    if args[0] == "send":
        port, txid, key = args[1:4]
        files = secret_files(root)
        api_key = open(files["processor_api_key"]).read().strip()
        secret = base64.b64decode(open(files["processor_api_secret"]).read().strip())
        body = json.dumps({"transaction": {"id": txid, "type": "BALANCE_INQUIRY"},
                           "user": {"id": "usr-deploy-check"},
                           "amount": {"local": {"total": "0", "currency": "ARS"}}}).encode()
        ep, ts = "/transactions/authorizations", str(int(time.time()))
        mac = hmac.new(secret, ts.encode() + ep.encode() + body, hashlib.sha256).digest()
        headers = {"X-Api-Key": api_key, "X-Timestamp": ts, "X-Endpoint": ep,
                   "X-Signature": "hmac-sha256 " + base64.b64encode(mac).decode(),
                   "x-idempotency-key": key, "Content-Type": "application/json"}
        c = conn(port)
        c.request("POST", ep, body, headers)
        r = c.getresponse()
        r.read()
        print(r.status)
    elif args[0] == "count":
        c = conn(args[1])
        c.request("GET", "/metrics")
        text = c.getresponse().read().decode()
        print(sum(int(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                  if line.startswith("authorizer_requests_total")))
    elif args[0] == "get":
        c = conn(args[1])
        c.request("GET", args[2])
        r = c.getresponse()
        r.read()
        print(r.status)


def cmd_data_of(root, kind, name, key):
    for _, d in k8s_docs(root):
        if d["kind"] == kind and d["metadata"]["name"] == name:
            data = {**(d.get("data") or {}), **(d.get("stringData") or {})}
            sys.stdout.write(data[key])
            return
    sys.exit(f"no {kind} {name}")


def main():
    cmd, root = sys.argv[1], sys.argv[2]
    if cmd == "settings":
        cmd_settings(root)
    elif cmd == "compose-files":
        cmd_compose_files(root, sys.argv[3])
    elif cmd == "kustomization":
        cmd_kustomization(root)
    elif cmd == "dashboard":
        cmd_dashboard(root)
    elif cmd == "env-of":
        cmd_env_of(root, sys.argv[3])
    elif cmd == "k8s-secrets":
        cmd_k8s_secrets(root)
    elif cmd == "k8s-scrape":
        cmd_k8s_scrape(root, sys.argv[3])
    elif cmd == "lb":
        cmd_lb(root, sys.argv[3:])
    elif cmd == "data-of":
        cmd_data_of(root, *sys.argv[3:6])
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
