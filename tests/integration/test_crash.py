"""A sender pushes 200,000 messages to a receiver over tcp loopback while the
receiver is SIGKILLed at random moments at least 5 times and the sender at
least 3 times, each restarted on its data directory. At the end every
message must have been applied exactly once and the sender's outbox must be
empty (the sender only exits 0 when it is). Then a sender whose data dir is
wiped and recreated (a new epoch) sends again, and none of its messages may
be mistaken for duplicates."""
import random
import time

from peerlib import Peer, Workdir, free_port, log, verify, fail, SANITIZED

COUNT = 200_000 if not SANITIZED else 60_000
SEED = int(time.time())
random.seed(SEED)
log("seed", SEED, "count", COUNT)

w = Workdir("crash")
port = free_port()
ep = "tcp://127.0.0.1:%d" % port
recv = Peer(["recv", "--dir", w.sub("dst"), "--bind", ep], w.sub("recv.log")).start()
# The sender is rate-limited so the transfer lasts long enough (about 20 s)
# for every kill to land while messages are in flight.
RATE = 10_000 if not SANITIZED else 4_000
send_args = ["send", "--dir", w.sub("src"), "--peer", "dst=" + ep, "--count", str(COUNT),
             "--rate", str(RATE)]
send = Peer(send_args, w.sub("send.log")).start()

kills = {"recv": 0, "send": 0}
deadline = time.time() + 600
plan = ["recv", "send", "recv", "recv", "send", "recv", "send", "recv"]
random.shuffle(plan)
for victim in plan:
    time.sleep(random.uniform(0.2, 1.6))
    if not send.alive():
        fail("the transfer ended before every kill landed (kills so far: %s)" % kills)
    p = recv if victim == "recv" else send
    p.kill()
    kills[victim] += 1
    log("killed", victim, kills)
    time.sleep(random.uniform(0.0, 0.4))
    p.start()

rc = send.wait(timeout=max(1, deadline - time.time()))
if rc != 0:
    fail("sender exited %s" % rc)
log("sender done; kills:", kills)
recv.term()
rc, out = verify(w.sub("dst"), COUNT, "m")
if rc != 0:
    fail("not exactly once: " + out)

# Phase 2: the sender's data directory is wiped and recreated.
import shutil
shutil.rmtree(w.sub("src"))
recv.start()
send2 = Peer(["send", "--dir", w.sub("src"), "--peer", "dst=" + ep, "--count", "5000",
              "--prefix", "n"], w.sub("send2.log")).start()
if send2.wait(timeout=120) != 0:
    fail("recreated sender did not finish")
recv.term()
rc, out = verify(w.sub("dst"), 5000, "n")
if rc != 0:
    fail("recreated sender's messages mistaken for duplicates or lost: " + out)
if "epoch_reset" not in open(w.sub("recv.log")).read():
    fail("the receiver did not log the epoch reset")
w.cleanup()
log("1 passed, 0 failed")
