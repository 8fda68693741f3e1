"""Drain: SIGTERM to a receiver under load exits 0 promptly, and after a
restart every message is applied exactly once. SIGTERM to a sender mid-way
also exits 0, and a restarted sender finishes with nothing lost."""
import time

from peerlib import Peer, Workdir, free_port, log, verify, fail

COUNT = 60_000
w = Workdir("drain")
ep = "tcp://127.0.0.1:%d" % free_port()
recv = Peer(["recv", "--dir", w.sub("dst"), "--bind", ep], w.sub("recv.log")).start()
send = Peer(["send", "--dir", w.sub("src"), "--peer", "dst=" + ep, "--count", str(COUNT),
             "--rate", "20000"], w.sub("send.log")).start()
for round_ in range(3):
    time.sleep(0.7)
    t0 = time.time()
    rc = recv.term(timeout=15)
    if rc != 0:
        fail("receiver exited %s on SIGTERM" % rc)
    log("receiver drained in %.3f s" % (time.time() - t0))
    recv.start()
time.sleep(0.5)
rc = send.term(timeout=15)
if rc != 0:
    fail("sender exited %s on SIGTERM" % rc)
send.start()
if send.wait(timeout=120) != 0:
    fail("sender did not finish")
if recv.term() != 0:
    fail("receiver did not exit cleanly")
rc, out = verify(w.sub("dst"), COUNT)
if rc:
    fail("drain lost or duplicated messages: " + out)
w.cleanup()
log("1 passed, 0 failed")
