"""The whole mesh in one process: `qmesh run --target all` starts the seven
services from a configuration, each answers /healthz, /readyz and /metrics on
its own port; a bad route edit is refused and logged while the services stay
ready; a good edit is applied on file change; SIGINT drains and exits 0.
Also the command-line surface: --help, --list-targets, config and route
checks with their exact error lines, probe's exit codes."""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

QMESH = os.environ.get("QMESH", "build/qmesh")
SRC = os.environ.get("QMESH_SOURCE_DIR", ".")
SERVICES = ["ingest", "transcribe", "autoscore", "policy", "coaching", "recognition", "reporting"]
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def free_port():
    return free_ports(1)[0]


def free_ports(n):
    """n distinct free ports: all sockets stay bound until every port is
    known, so the system cannot hand out the same port twice."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return 0, str(e)


def run(*args):
    return subprocess.run([QMESH] + list(args), capture_output=True, text=True, timeout=60)


work = tempfile.mkdtemp(prefix="qmesh-runtime-")
shutil.copy(os.path.join(SRC, "configs", "routes.cfg"), os.path.join(work, "routes.cfg"))
_ports = free_ports(3 * len(SERVICES))
ports = dict(zip(SERVICES, _ports))
bus_ports = dict(zip(SERVICES, _ports[len(SERVICES):]))
spare_port = _ports[-1]  # bound by nobody: probe's "nothing answers" case
QM_PEER = os.environ.get("QM_PEER", "build/tests/qm_peer")
with open(os.path.join(work, "qmesh.cfg"), "w") as f:
    f.write('data_dir = "data";\nroutes_file = "routes.cfg";\n')
    f.write('bus = { retransmit_ms = 200; backoff_max_ms = 1000; };\n')
    f.write("services = {\n")
    for i, s in enumerate(SERVICES):
        f.write('  %s = { bind = "tcp://127.0.0.1:%d"; http = "127.0.0.1:%d"; };\n'
                % (s, bus_ports[s], ports[s]))
    f.write("};\n")
cfg = os.path.join(work, "qmesh.cfg")

# --- command-line surface
for cmd in [["--help"], ["run", "--help"], ["config", "--help"], ["routes", "--help"],
            ["dead", "--help"], ["probe", "--help"], ["plugin", "--help"]]:
    r = run(*cmd)
    check(r.returncode == 0 and "usage" in (r.stdout + r.stderr).lower(), "qmesh %s" % " ".join(cmd))
r = run("run", "--list-targets")
check(r.returncode == 0 and all(s in r.stdout for s in SERVICES + ["all"]), "--list-targets lists every target")
r = run("run", "--config", cfg, "--target", "nonesuch")
check(r.returncode == 2 and 'unknown target "nonesuch"' in r.stderr, "unknown target refused")
r = run("config", "check", cfg)
check(r.returncode == 0, "config check passes on the test config: " + r.stdout.strip() + r.stderr.strip())
r = run("config", "check", os.path.join(SRC, "configs", "qmesh.cfg"))
check(r.returncode == 0, "config check passes on configs/qmesh.cfg")
bad = os.path.join(work, "bad.cfg")
open(bad, "w").write('bus = {\n  window = "lots";\n};\n')
r = run("config", "check", bad)
check(r.returncode == 1 and r.stderr.startswith(bad + ":2: bus.window:"), "bad config names file, line and setting: " + r.stderr.strip())
r = run("routes", "check", "--config", cfg, os.path.join(work, "routes.cfg"))
check(r.returncode == 0, "routes check passes on the shipped table")

# --- the mesh
log_path = os.path.join(work, "mesh.log")
logf = open(log_path, "wb")
proc = subprocess.Popen([QMESH, "run", "--config", cfg, "--target", "all"], stdout=logf, stderr=logf, cwd=work)
import atexit
# Whatever happens below (an exception, a timeout), the mesh does not
# outlive the test.
atexit.register(lambda: proc.poll() is None and proc.kill())
deadline = time.time() + 30
ready = set()
while time.time() < deadline and len(ready) < len(SERVICES):
    for s in SERVICES:
        if s not in ready and get("http://127.0.0.1:%d/readyz" % ports[s])[0] == 200:
            ready.add(s)
    time.sleep(0.1)
check(ready == set(SERVICES), "every service reports ready (%s)" % sorted(ready))
for s in SERVICES:
    code, body = get("http://127.0.0.1:%d/healthz" % ports[s])
    check(code == 200, "%s /healthz" % s)
    code, body = get("http://127.0.0.1:%d/metrics" % ports[s])
    check(code == 200 and ('qmesh_route_reloads_total{service="%s"}' % s) in body, "%s /metrics" % s)
r = run("probe", "http://127.0.0.1:%d/readyz" % ports["autoscore"])
check(r.returncode == 0, "probe exits 0 on a ready service")
r = run("probe", "--timeout", "500", "http://127.0.0.1:%d/readyz" % spare_port)
check(r.returncode == 1, "probe exits 1 when nothing answers")

# Dead letters: undecodable payloads sent to autoscore's inbox are consumed
# into its dead store with the reason, listed, shown, and refused again on
# replay (they still do not decode), never lost.
import json
peer_dir = os.path.join(work, "peer")
r = subprocess.run([QM_PEER, "send", "--garbage", "--dir", peer_dir, "--count", "3",
                    "--peer", "dst=tcp://127.0.0.1:%d" % bus_ports["autoscore"]],
                   capture_output=True, text=True, timeout=60)
check(r.returncode == 0, "3 undecodable payloads delivered to autoscore")
r = run("dead", "list", "--config", cfg, "--service", "autoscore", "--json")
entries = json.loads(r.stdout) if r.returncode == 0 else []
check(len(entries) == 3 and all(e["reason"].startswith("EDECODE") for e in entries),
      "dead list shows the 3 with their decode error: %s" % [e.get("reason") for e in entries][:1])
r = run("dead", "list", "--config", cfg, "--service", "autoscore")
check(r.returncode == 0 and "3 dead messages" in r.stdout, "dead list prints a table")
if entries:
    r = run("dead", "show", "--config", cfg, "--service", "autoscore", entries[0]["id"])
    shown = json.loads(r.stdout) if r.returncode == 0 else {}
    check(shown.get("id") == entries[0]["id"] and "raw_hex" in shown and shown.get("from") == "src",
          "dead show prints the entry with its bytes and source")
    r = run("dead", "replay", "--config", cfg, "--service", "autoscore", "--all")
    check(r.returncode == 1 and r.stdout.count("EREFUSED") == 3,
          "replay through the running service reports each still refused")
    r = run("dead", "list", "--config", cfg, "--service", "autoscore", "--json")
    again = json.loads(r.stdout) if r.returncode == 0 else []
    check(sorted(e["id"] for e in again) == sorted(e["id"] for e in entries),
          "refused replays keep their entries and ids")
r = run("dead", "show", "--config", cfg, "--service", "autoscore", "0190d6f2-0000-7000-8000-000000000000")
check(r.returncode == 1 and "no dead message" in r.stderr, "dead show of an unknown id fails clearly")
m = re.findall(r'qmesh_frames_malformed_total\{service="autoscore"\} (\d+)',
               get("http://127.0.0.1:%d/metrics" % ports["autoscore"])[1])
check(m and int(m[0]) >= 3, "malformed messages are counted in /metrics")

# A bad edit: refused, the old table kept, services still ready.
routes = os.path.join(work, "routes.cfg")
good = open(routes).read()
open(routes, "w").write(good.replace('to = ["transcribe"]', 'to = ["transcriber"]', 1))
time.sleep(1.5)
proc.send_signal(signal.SIGHUP)
time.sleep(1.0)
text = open(log_path).read()
check("route.reload_refused" in text and 'unknown service \\"transcriber\\"' in text,
      "an invalid route edit is refused with its reason")
check(all(get("http://127.0.0.1:%d/readyz" % ports[s])[0] == 200 for s in SERVICES),
      "services stay ready on the old table")
m = re.findall(r'qmesh_route_reload_failures_total\{service="ingest"\} (\d+)',
               get("http://127.0.0.1:%d/metrics" % ports["ingest"])[1])
check(m and int(m[0]) >= 1, "reload failures are counted")
# A good edit applied on file change alone (no signal).
open(routes + ".new", "w").write(good)
os.rename(routes + ".new", routes)
t0 = time.time()
applied = False
while time.time() - t0 < 5 and not applied:
    time.sleep(0.2)
    body = get("http://127.0.0.1:%d/metrics" % ports["policy"])[1]
    applied = 'qmesh_route_reloads_total{service="policy"} 1' in body or \
        re.search(r'qmesh_route_reloads_total\{service="policy"\} [1-9]', body) is not None
check(applied, "a valid edit is applied on file change")

# Drain on SIGINT (Ctrl-C, as in `make demo`; tests/integration covers SIGTERM).
t0 = time.time()
proc.send_signal(signal.SIGINT)
try:
    rc = proc.wait(timeout=20)
except subprocess.TimeoutExpired:
    proc.kill()
    rc = "timeout"
check(rc == 0, "SIGINT drains and exits 0 (rc=%s, %.2f s)" % (rc, time.time() - t0))
check("event=runtime.drained" in open(log_path).read(), "the drain is logged")
text = open(log_path).read()
check(text.count("event=service.stopped") == len(SERVICES), "every service logged its stop")
for line in text.splitlines():
    if not re.match(r"^ts=\S+ level=(debug|info|warn|error) svc=\S+ event=\S+", line):
        check(False, "unstructured log line: " + line)
        break
shutil.rmtree(work, ignore_errors=True) if not failures else print(open(log_path).read()[-6000:])
print("%d passed, %d failed" % (0 if failures else 1, 1 if failures else 0))
sys.exit(1 if failures else 0)
