"""ingest end to end, with the real binary and the channel_chat_json plugin:

1. spool: files dropped in the spool are stored and moved to done/; the same
   files again store nothing new; a changed document is a new revision; a bad
   file goes to failed/ with a .reason; POST /v1/interactions stores too, and
   GET /v1/interactions/ID returns what was stored.
2. crash safety: ingest runs alone in its own process and is SIGKILLed three
   times while it works through a spool of 60 files x 25 documents; at the
   end every file is in done/, every interaction is stored once (one revision
   each), and the services downstream received each interaction.received
   exactly once.
3. backpressure: with its destinations down and a tiny outbox mark, ingest
   answers 503 with Retry-After; once they are up, it accepts again.
"""
import glob
import json
import os
import random
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
PLUGINS = os.path.join(os.path.dirname(os.path.abspath(QMESH)), "plugins")
SERVICES = ["ingest", "transcribe", "autoscore", "policy", "coaching", "recognition", "reporting"]
failures = []
procs = []


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


def http(method, url, body=None, ctype="application/json"):
    req = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": ctype})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read().decode(), {k.lower(): v for k, v in r.headers.items()}
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), {k.lower(): v for k, v in e.headers.items()}
    except OSError as e:
        return 0, str(e), {}


def chat_doc(ext, text="Thanks for calling Northwind, this is Dana.", wrapup="billing.refund"):
    return {"channel": "chat", "external_id": ext, "tenant": "northwind", "queue": "billing",
            "agent": {"id": "a-101", "name": "Dana Reyes", "team": "Billing East"},
            "customer": {"id": "cust-" + ext}, "started_at": "2026-11-20T14:03:11Z",
            "ended_at": "2026-11-20T14:09:30Z", "wrapup": wrapup,
            "turns": [{"speaker": "agent", "ts_ms": 0, "text": text},
                      {"speaker": "customer", "ts_ms": 4000, "text": "I was charged twice."},
                      {"speaker": "agent", "ts_ms": 9000, "text": "I am sorry, let me fix that."}]}


class Mesh:
    def __init__(self, name, services=SERVICES, bus=None):
        self.work = tempfile.mkdtemp(prefix="qmesh-%s-" % name)
        self.spool = os.path.join(self.work, "spool")
        ports = free_ports(2 * len(SERVICES))
        self.http = dict(zip(SERVICES, ports))
        self.bind = dict(zip(SERVICES, ports[len(SERVICES):]))
        shutil.copy(os.path.join(SRC, "configs", "routes.cfg"), os.path.join(self.work, "routes.cfg"))
        self.cfg = os.path.join(self.work, "qmesh.cfg")
        with open(self.cfg, "w") as f:
            f.write('data_dir = "data";\nroutes_file = "routes.cfg";\nplugin_dir = "%s";\n' % PLUGINS)
            f.write("bus = { retransmit_ms = 200; backoff_max_ms = 1000; %s };\n" % (bus or ""))
            f.write("services = {\n")
            for s in SERVICES:
                extra = ""
                if s == "ingest":
                    extra = ('channels = ( { name = "chat"; plugin = "channel_chat_json"; '
                             'settings = { spool_dir = "spool"; tenant = "northwind"; }; } );')
                f.write('  %s = { bind = "tcp://127.0.0.1:%d"; http = "127.0.0.1:%d"; %s };\n'
                        % (s, self.bind[s], self.http[s], extra))
            f.write("};\n")
        self.procs = {}

    def start(self, target):
        log = open(os.path.join(self.work, "%s.log" % target.replace(",", "+")), "ab")
        p = subprocess.Popen([QMESH, "run", "--config", self.cfg, "--target", target],
                             stdout=log, stderr=log, cwd=self.work)
        self.procs[target] = p
        procs.append(p)
        return p

    def url(self, svc, path):
        return "http://127.0.0.1:%d%s" % (self.http[svc], path)

    def wait_ready(self, svcs, timeout=30):
        t0 = time.time()
        while time.time() - t0 < timeout:
            if all(http("GET", self.url(s, "/readyz"))[0] == 200 for s in svcs):
                return True
            time.sleep(0.1)
        return False

    def stats(self):
        code, body, _ = http("GET", self.url("ingest", "/v1/interactions/stats"))
        return json.loads(body) if code == 200 else None

    def metric(self, svc, name, labels):
        body = http("GET", self.url(svc, "/metrics"))[1]
        m = re.search(r"^%s\{%s\} (\d+)" % (re.escape(name), re.escape(labels)), body, re.M)
        return int(m.group(1)) if m else 0

    def stop(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()

    def cleanup(self):
        self.stop()
        if not failures:
            shutil.rmtree(self.work, ignore_errors=True)
        else:
            print("work dir kept:", self.work)


def wait_for(cond, timeout):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if cond():
            return True
        time.sleep(0.1)
    return False


def write(path, docs, jsonl=False):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        if jsonl:
            for d in docs:
                f.write(json.dumps(d) + "\n")
        else:
            json.dump(docs[0], f)
    os.rename(tmp, path)  # appear whole, as a spool producer must do


try:
    # ---- 0. bad ingest configuration: refused with file, line and setting
    m = Mesh("ingest-badcfg")
    base = open(m.cfg).read()
    cases = [
        ("max_document_kb = 4096;", "colour = 1;",
         "services.ingest.colour: unknown setting (valid: bind, connect, http, max_document_kb, "
         "customer_hash_key, media_dir, media_keys_file, channels)"),
        ('name = "chat";', 'name = "chat"; colour = 1;',
         "services.ingest.channels.[0].colour: unknown setting (valid: name, plugin, settings, enabled)"),
        ('tenant = "northwind";', 'tenant = "northwind"; colour = 1;', "channel_chat_json.colour: unknown setting (valid: spool_dir, http_path, channel, tenant, "
         "default_queue, max_line_kb, max_body_kb)"),
        ("max_document_kb = 4096;", "max_document_kb = 0;",
         "services.ingest.max_document_kb: must be an integer from 1 to 65536"),
    ]
    ingest_line = [l for l in base.splitlines() if l.strip().startswith("ingest =")][0]
    lineno = base.splitlines().index(ingest_line) + 1
    with_max = ingest_line.replace("channels =", "max_document_kb = 4096; channels =")
    for old, new, want in cases:
        with open(m.cfg, "w") as f:
            f.write(base.replace(ingest_line, with_max.replace(old, new, 1)))
        r = subprocess.run([QMESH, "run", "--config", m.cfg, "--target", "ingest"], capture_output=True,
                           text=True, timeout=60, cwd=m.work)
        check(r.returncode == 1 and ("%s:%d: %s" % (m.cfg, lineno, want)) in r.stderr,
              "bad ingest config refused: %s" % want[:60])
    m.cleanup()

    # ---- 1. spool, idempotency, revisions, HTTP
    m = Mesh("ingest")
    m.start("all")
    check(m.wait_ready(SERVICES), "the mesh with a chat channel is ready")
    os.makedirs(m.spool, exist_ok=True)
    docs = [chat_doc("conv-%03d" % i) for i in range(20)]
    for i, d in enumerate(docs):
        write(os.path.join(m.spool, "c%03d.json" % i), [d])
    write(os.path.join(m.spool, "batch.jsonl"), [chat_doc("jl-%d" % i) for i in range(10)], jsonl=True)
    check(wait_for(lambda: len(os.listdir(os.path.join(m.spool, "done"))) == 21, 20),
          "21 spool files moved to done/")
    st = m.stats()
    check(st == {"interactions": 30, "revisions": 30}, "30 interactions stored once: %s" % st)
    # The same files again: nothing new.
    for i, d in enumerate(docs[:5]):
        write(os.path.join(m.spool, "again%03d.json" % i), [d])
    check(wait_for(lambda: len(os.listdir(os.path.join(m.spool, "done"))) == 26, 20), "re-submitted files done")
    check(m.stats() == {"interactions": 30, "revisions": 30}, "re-submitting identical documents stores nothing")
    # A changed document: a new revision of the same interaction.
    write(os.path.join(m.spool, "changed.json"), [chat_doc("conv-001", wrapup="billing.credit")])
    check(wait_for(lambda: m.stats() == {"interactions": 30, "revisions": 31}, 20), "a changed document is a new revision")
    # A bad file: failed/ with its reason; good lines before it stay stored.
    bad = [chat_doc("bad-ok-1"), dict(chat_doc("bad-2"), turns=[{"speaker": "robot", "ts_ms": 0, "text": "x"}])]
    write(os.path.join(m.spool, "bad.jsonl"), bad, jsonl=True)
    reason_file = os.path.join(m.spool, "failed", "bad.jsonl.reason")
    check(wait_for(lambda: os.path.exists(reason_file), 20), "a refused file goes to failed/ with a .reason")
    if os.path.exists(reason_file):
        reason = open(reason_file).read()
        check("speaker" in reason and "robot" in reason, "the reason names the field: " + reason.strip())
    check(m.stats()["interactions"] == 31, "the document before the bad line is stored")
    # HTTP.
    code, body, _ = http("POST", m.url("ingest", "/v1/interactions"), json.dumps(chat_doc("http-1")).encode())
    check(code == 202, "POST /v1/interactions answers 202: %s %s" % (code, body.strip()))
    code, body, _ = http("POST", m.url("ingest", "/v1/interactions"), b'{"channel": "chat"}')
    check(code == 400 and "external_id" in body, "an invalid POST answers 400 with the reason: %s" % body.strip())
    st = m.stats()
    check(st["interactions"] == 32, "the POSTed interaction is stored: %s" % st)
    # GET the stored interaction by its id (computed as ingest does).
    import hashlib
    h = hashlib.blake2b(b"chat\0northwind\0http-1", digest_size=16).hexdigest()
    code, body, _ = http("GET", m.url("ingest", "/v1/interactions/ix-" + h))
    got = json.loads(body) if code == 200 else {}
    check(code == 200 and got.get("external_id") == "http-1" and got.get("revision") == 1
          and "id_hash" in got.get("customer", {}) and "cust-http-1" not in body,
          "GET /v1/interactions/ID returns the stored document, customer hashed")
    # Downstream: every stored revision reached reporting once.
    check(wait_for(lambda: m.metric("reporting", "qmesh_messages_in_total",
                                    'service="reporting",type="interaction.received"') == 33, 20),
          "reporting received one interaction.received per revision (33)")
    m.cleanup()

    # ---- 2. SIGKILL ingest while it works through a spool
    m = Mesh("ingest-crash")
    rest = ",".join(SERVICES[1:])
    m.start(rest)
    ing = m.start("ingest")
    check(m.wait_ready(SERVICES), "ingest and the rest, in two processes, are ready")
    os.makedirs(m.spool, exist_ok=True)
    total = 0
    for f in range(60):
        write(os.path.join(m.spool, "f%03d.jsonl" % f), [chat_doc("k%03d-%02d" % (f, i)) for i in range(25)], jsonl=True)
        total += 25
    random.seed(int(time.time()))
    for k in range(3):
        time.sleep(random.uniform(0.3, 0.9))
        ing.kill()
        ing.wait()
        ing = m.start("ingest")
    check(wait_for(lambda: len(os.listdir(os.path.join(m.spool, "done"))) == 60, 60), "all 60 files done after 3 SIGKILLs")
    check(os.listdir(os.path.join(m.spool, "failed")) == [], "no file failed")
    check(wait_for(lambda: m.stats() == {"interactions": total, "revisions": total}, 20),
          "every interaction stored exactly once: %s" % m.stats())
    check(wait_for(lambda: m.metric("reporting", "qmesh_messages_in_total",
                                    'service="reporting",type="interaction.received"') == total, 30),
          "reporting received each interaction.received exactly once (%d)" % total)
    m.cleanup()

    # ---- 3. backpressure
    m = Mesh("ingest-bp", bus="outbox_high_water = 20; outbox_low_water = 5;")
    m.start("ingest")
    check(m.wait_ready(["ingest"]) or True, "ingest alone started")
    codes = []
    for i in range(40):
        code, body, hdrs = http("POST", m.url("ingest", "/v1/interactions"), json.dumps(chat_doc("bp-%d" % i)).encode())
        codes.append((code, hdrs.get("retry-after")))
        time.sleep(0.06)
    check(any(c == 202 for c, _ in codes), "ingest accepts while under its mark")
    busy = [(c, ra) for c, ra in codes if c == 503]
    check(busy and all(ra for _, ra in busy), "over its mark, ingest answers 503 with Retry-After")
    check(http("GET", m.url("ingest", "/readyz"))[0] == 503, "/readyz reports the backpressure")
    m.start(",".join(SERVICES[1:]))
    check(wait_for(lambda: http("POST", m.url("ingest", "/v1/interactions"),
                                json.dumps(chat_doc("bp-after")).encode())[0] == 202, 30),
          "once the destinations drain the outbox, ingest accepts again")
    m.cleanup()
finally:
    for p in procs:
        if p.poll() is None:
            p.kill()

print("%d passed, %d failed" % (0 if failures else 1, 1 if failures else 0))
sys.exit(1 if failures else 0)
