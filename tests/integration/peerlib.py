"""Helpers for the integration tests: free ports, temporary data dirs, and
qm_peer processes that can be killed and restarted."""
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

QM_PEER = os.environ.get("QM_PEER", "build/tests/qm_peer")
QMESH = os.environ.get("QMESH", "build/qmesh")
SANITIZED = os.environ.get("QMESH_SANITIZED") == "1"


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


def log(*a):
    print(*a, flush=True)


class Peer:
    """One qm_peer process; start() again after kill() restarts it on the
    same data directory."""

    def __init__(self, args, logfile):
        self.args = args
        self.logfile = logfile
        self.proc = None

    def start(self):
        out = open(self.logfile, "ab")
        self.proc = subprocess.Popen([QM_PEER] + self.args, stdout=subprocess.PIPE, stderr=out)
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def term(self, timeout=30):
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            return self.proc.wait(timeout=timeout)
        return self.proc.returncode

    def wait(self, timeout):
        return self.proc.wait(timeout=timeout)


class Workdir:
    def __init__(self, name):
        self.path = tempfile.mkdtemp(prefix="qmesh-%s-" % name)

    def sub(self, *p):
        return os.path.join(self.path, *p)

    def cleanup(self):
        shutil.rmtree(self.path, ignore_errors=True)


def verify(dir_, count, prefix="m", first=1):
    r = subprocess.run([QM_PEER, "verify", "--dir", dir_, "--count", str(count), "--prefix", prefix,
                        "--first", str(first)], capture_output=True, text=True)
    log("verify %s: %s %s" % (prefix, r.stdout.strip(), r.stderr.strip()))
    return r.returncode, r.stdout.strip()


def fail(msg):
    log("FAIL: " + msg)
    sys.exit(1)


def applied_count(out):
    """The A of `applied=A missing=M dups=D`."""
    return int(out.split()[0].split("=")[1])
