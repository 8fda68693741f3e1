"""Route reload under load: 50,000 messages flow from a sender to `dst` at a
steady rate; part-way an invalid route table is written and SIGHUP sent (it
must be refused and the old table keep working), then a valid table that
sends everything to `dst2`. Every message must arrive exactly once; those
produced before the reload at `dst`, those after at `dst2`."""
import re
import signal
import time

from peerlib import Peer, Workdir, free_ports, log, verify, fail, applied_count

COUNT = 50_000
w = Workdir("reload")
routes = w.sub("routes.cfg")
TABLE = 'extra_types = ["bench.msg"];\nroutes = ( { name = "bench"; match = "bench.*"; to = ["%s"]; } );\n'
open(routes, "w").write(TABLE % "dst")
ep1, ep2 = ("tcp://127.0.0.1:%d" % p for p in free_ports(2))
r1 = Peer(["recv", "--dir", w.sub("dst"), "--bind", ep1, "--name", "dst"], w.sub("dst.log")).start()
r2 = Peer(["recv", "--dir", w.sub("dst2"), "--bind", ep2, "--name", "dst2"], w.sub("dst2.log")).start()
send = Peer(["send", "--dir", w.sub("src"), "--peer", "dst=" + ep1, "--peer", "dst2=" + ep2,
             "--count", str(COUNT), "--rate", "10000", "--routes", routes], w.sub("src.log")).start()

time.sleep(1.5)
open(routes, "w").write(TABLE % "nowhere")
send.proc.send_signal(signal.SIGHUP)
time.sleep(1.0)
open(routes, "w").write(TABLE % "dst2")
send.proc.send_signal(signal.SIGHUP)

if send.wait(timeout=180) != 0:
    fail("sender did not finish")
r1.term()
r2.term()
text = open(w.sub("src.log")).read()
if "route.reload_refused" not in text or 'unknown service \\"nowhere\\"' not in text:
    fail("the invalid table was not refused with its reason:\n" + text[-2000:])
m = re.findall(r"route\.reloaded produced=(\d+)", text)
if len(m) != 1:
    fail("expected exactly one applied reload, found %d" % len(m))
boundary = int(m[0])
log("reload applied after message", boundary)
if not (0 < boundary < COUNT):
    fail("the reload did not happen under load (boundary %d)" % boundary)
rc1, out1 = verify(w.sub("dst"), boundary, "m", 1)
rc2, out2 = verify(w.sub("dst2"), COUNT, "m", boundary + 1)
if rc1 or rc2:
    fail("lost or duplicated messages across the reload")
if applied_count(out1) != boundary or applied_count(out2) != COUNT - boundary:
    fail("messages did not follow the table in force when they were enqueued")
w.cleanup()
log("1 passed, 0 failed")
