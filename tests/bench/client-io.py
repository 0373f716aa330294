#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# Client connection I/O of photond, measured (docs/performance.md, "Client connection I/O"):
#   leak       100 clients write more than one 16 KiB read and close while photond is stopped: slots leaked
#   halfclose  100 clients each of five kinds send, shutdown(SHUT_WR) and read: answered and closed counts
#   lists      list_locks at 1,000 / 10,000 / 65,536 locks: request to last byte, photond's CPU time
#   caps-locks caps-locksbig caps-jobs caps-channels caps-ps
#              each list at its cap over the socket, photonctl and D-Bus (a private dbus-daemon)
# Usage: client-io.py PHOTOND PHOTONCTL [WHAT...]. Loopback Unix sockets only; bounded counts.
import json, os, shutil, socket, subprocess, sys, tempfile, time

BIN, CTL = sys.argv[1], sys.argv[2]
WHAT = sys.argv[3:] or ["leak", "halfclose", "lists"]
import json, os, socket, subprocess, sys, tempfile, time


def start(env_extra=None):
    home = tempfile.mkdtemp(prefix="cio-")
    sock = os.path.join(home, "d.sock")
    env = dict(os.environ, PHOTON_HOME=home, PHOTON_DIR=home)
    env.update(env_extra or {})
    p = subprocess.Popen([BIN, "--socket", sock, "--bus=none"], env=env, stderr=open(home + "/log", "w"))
    for _ in range(500):
        if os.path.exists(sock):
            try:
                s = connect(sock); s.close(); break
            except OSError:
                pass
        time.sleep(0.01)
    return p, sock, home

def connect(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    return s

class Conn:
    def __init__(self, path):
        self.s = connect(path); self.buf = b""
    def send(self, obj):
        self.s.sendall((json.dumps(obj) + "\n").encode())
    def recv_line(self, timeout=30):
        # Chunks in a list, the newline looked for in the new chunk only: linear in the line's size.
        self.s.settimeout(timeout)
        chunks = [self.buf]
        while b"\n" not in chunks[-1]:
            d = self.s.recv(1 << 20)
            if not d:
                self.buf = b"".join(chunks)
                return None
            chunks.append(d)
        data = b"".join(chunks)
        line, self.buf = data.split(b"\n", 1)
        return line
    def recv(self, timeout=30):
        line = self.recv_line(timeout)
        return None if line is None else json.loads(line)
    def request(self, obj, timeout=30):
        self.send(obj)
        while True:
            o = self.recv(timeout)
            if o is None or o.get("id") == obj["id"]:
                return o

def cpu_ms(pid):
    f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) * 1000 // os.sysconf("SC_CLK_TCK")

def status(path):
    c = Conn(path); o = c.request({"type": "status", "id": "st"}); c.s.close(); return o["data"]

def settled_clients(path, want=1, secs=3.0):
    # The closes race with our status: poll until the count reaches want or secs pass.
    end = time.time() + secs
    while True:
        n = status(path)["clients"]
        if n <= want or time.time() > end:
            return n
        time.sleep(0.05)

def big_ping(i, size):
    pad = "x" * size
    return (json.dumps({"type": "ping", "id": "p%d" % i, "pad": pad}) + "\n").encode()

def read_until_eof(s, timeout):
    s.settimeout(timeout)
    data = b""; closed = False
    end = time.time() + timeout
    try:
        while time.time() < end:
            d = s.recv(65536)
            if not d:
                closed = True; break
            data += d
    except socket.timeout:
        pass
    except ConnectionResetError:
        closed = True
    return data, closed



def start_bus(home):
    addr = "unix:path=%s/bus" % home
    d = subprocess.Popen(["dbus-daemon", "--session", "--nofork", "--nopidfile", "--address=" + addr],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        if os.path.exists(home + "/bus"):
            break
        time.sleep(0.01)
    return d, addr

def start_with_bus(env_extra=None):
    home = tempfile.mkdtemp(prefix="caps-")
    bus, addr = start_bus(home)
    sock = os.path.join(home, "d.sock")
    env = dict(os.environ, PHOTON_HOME=home, PHOTON_DIR=home, DBUS_SESSION_BUS_ADDRESS=addr)
    env.update(env_extra or {})
    p = subprocess.Popen([BIN, "--socket", sock, "--bus=user"], env=env, stderr=open(home + "/log", "w"))
    for _ in range(500):
        if os.path.exists(sock):
            try:
                s = connect(sock); s.close(); break
            except OSError:
                pass
        time.sleep(0.01)
    time.sleep(0.3)  # the bus name request; only for the busctl calls below
    return p, bus, sock, home, addr

def rss_mb(pid):
    with open("/proc/%d/status" % pid) as f:
        for l in f:
            if l.startswith("VmRSS"):
                return int(l.split()[1]) // 1024
    return -1

def timed(f):
    t0 = time.perf_counter(); r = f(); return r, (time.perf_counter() - t0) * 1000

def sock_list(path, req, key):
    c = Conn(path)
    c.send(dict(req, id="x"))
    line, ms = timed(lambda: c.recv_line(120))
    c.s.close()
    if line is None:
        return "connection closed, no answer", ms, 0
    o = json.loads(line)
    v = o["data"]
    for k in key.split("."):
        v = v[k]
    return "%d entries" % len(v), ms, len(line) + 1

def ctl(path, addr, *args):
    env = dict(os.environ, DBUS_SESSION_BUS_ADDRESS=addr)
    r, ms = timed(lambda: subprocess.run([CTL, "--socket", path] + list(args), stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, env=env, timeout=300))
    return "exit %d, %d lines%s" % (r.returncode, r.stdout.count(b"\n"),
                                    (", stderr: " + r.stderr.decode()[:200].strip()) if r.returncode else ""), ms

def busctl(addr, method):
    env = dict(os.environ, DBUS_SESSION_BUS_ADDRESS=addr)
    r, ms = timed(lambda: subprocess.run(["busctl", "--user", "--json=short", "call", "org.photond.Daemon1",
                                          "/org/photond/Daemon1", "org.photond.Daemon1", method],
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, timeout=300))
    if r.returncode:
        return "exit %d: %s" % (r.returncode, r.stderr.decode()[:200].strip()), ms, 0
    o = json.loads(r.stdout)
    return "%d entries" % len(o["data"][0]), ms, len(r.stdout)

def report(what, p, path, addr, req, key, ctlverb, busmethod, rounds=3):
    for i in range(rounds):
        res, ms, size = sock_list(path, req, key)
        print("%s: socket %s: %s in %.0f ms, %d bytes, photond RSS %d MiB" % (what, req["type"], res, ms, size, rss_mb(p.pid)), flush=True)
    if ctlverb:
        res, ms = ctl(path, addr, ctlverb)
        print("%s: photonctl %s: %s in %.0f ms" % (what, ctlverb, res, ms), flush=True)
    if busmethod:
        res, ms, size = busctl(addr, busmethod)
        print("%s: D-Bus %s: %s in %.0f ms (busctl --json output %d bytes)" % (what, busmethod, res, ms, size), flush=True)
    st = status(path)
    print("%s: status writeQueueDisconnects %s clientsClosed %s" % (what, st.get("writeQueueDisconnects"), st.get("clientsClosed")), flush=True)

def pipelined(c, reqs, W=512):
    for i in range(0, len(reqs), W):
        chunk = reqs[i:i + W]
        c.s.sendall(b"".join((json.dumps(r) + "\n").encode() for r in chunk))
        for r in chunk:
            o = c.recv(120)
            assert o is not None and o.get("type") == "result" and o.get("success"), o

if set(WHAT) & {"leak", "halfclose", "lists"}:
    p, path, home = start()
    try:
        if "leak" in WHAT:
          for variant in ("complete line", "no newline", "two lines"):
            before = settled_clients(path, 1, 3.0)
            # photond stopped: each client's data and its close are all there when photond looks (one edge).
            os.kill(p.pid, 19)
            for i in range(100):
                s = connect(path)
                data = big_ping(i, 20 * 1024)
                if variant == "no newline":
                    data = data[:-1]
                elif variant == "two lines":
                    data = data + big_ping(i, 20 * 1024)
                s.sendall(data)
                s.close()
            os.kill(p.pid, 18)
            n = settled_clients(path, 1, 5.0)
            print("leak: 100 clients wrote >16 KiB (%s) and closed: status.clients %d -> %d (leaked %d)" % (variant, before, n, n - before))
        if "halfclose" in WHAT:
            for name, payload in [("20KiB request + SHUT_WR", lambda i: big_ping(i, 20 * 1024)),
                                  ("100 B request + SHUT_WR", lambda i: big_ping(i, 50)),
                                  ("40KiB request + SHUT_WR", lambda i: big_ping(i, 40 * 1024)),
                                  ("line without newline + SHUT_WR", lambda i: big_ping(i, 50)[:-1]),
                                  ("20KiB line without newline + SHUT_WR", lambda i: big_ping(i, 20 * 1024)[:-1])]:
                answered = closed = 0
                for i in range(100):
                    s = connect(path)
                    s.sendall(payload(i))
                    s.shutdown(socket.SHUT_WR)
                    data, c = read_until_eof(s, 1.0)
                    answered += b'"pong"' in data
                    closed += c
                    s.close()
                print("halfclose: %-38s answered %3d/100 closed %3d/100" % (name, answered, closed))
            print("halfclose: status.clients after: %d" % settled_clients(path, 1, 3.0))
        if "lists" in WHAT:
            c = Conn(path)
            have = 0
            for n in (1000, 10000, 65536):
                # Pipelined acquires, read in windows, so the queue never piles up.
                W = 512
                i = have
                while i < n:
                    k = min(W, n - i)
                    c.s.sendall(b"".join((json.dumps({"type": "lock", "id": "l%d" % j, "lockName": "lock-%06d" % j,
                                                      "sessionId": "holder-%06d" % j, "lockTimeout": 600000}) + "\n").encode()
                                         for j in range(i, i + k)))
                    for _ in range(k):
                        o = c.recv()
                        assert o and o["data"]["acquired"], o
                    i += k
                have = n
                times = []
                cpus = []
                ok = True
                for r in range(5):
                    cpu0 = cpu_ms(p.pid)
                    t0 = time.perf_counter()
                    c.send({"type": "list_locks", "id": "ll%d" % r})
                    line = c.recv_line()
                    times.append((time.perf_counter() - t0) * 1000)
                    cpus.append(cpu_ms(p.pid) - cpu0)
                    o = None if line is None else json.loads(line)
                    if o is None:
                        ok = False
                        print("lists: list_locks at %d locks: connection closed, no reply" % n)
                        c = Conn(path)
                        break
                    assert len(o["data"]["locks"]) == n, len(o["data"]["locks"])
                st = status(path)
                if ok:
                    times.sort(); cpus.sort()
                    print("lists: list_locks at %5d locks, request to last byte: median %.1f ms (min %.1f, max %.1f), photond CPU median %d ms, reply %d bytes, writeQueueDisconnects %s"
                          % (n, times[2], times[0], times[-1], cpus[2], len(line) + 1, st.get("writeQueueDisconnects")))
                else:
                    print("lists: status after: writeQueueDisconnects %s, disconnects %s" % (st.get("writeQueueDisconnects"), st.get("clientsClosed")))
    finally:
        p.terminate(); p.wait()
        if os.environ.get("SHOWLOG"):
            print(open(home + "/log").read()[-3000:])

for what in [w[5:] for w in WHAT if w.startswith("caps-")]:
    p, bus, path, home, addr = start_with_bus()
    try:
        c = Conn(path)
        if what == "locks":
            pipelined(c, [{"type": "lock", "id": "l%d" % j, "lockName": "lock-%06d" % j, "sessionId": "holder-%06d" % j,
                           "lockTimeout": 3600000} for j in range(65536)])
            report("locks 65536 short", p, path, addr, {"type": "list_locks"}, "locks", "locks", "ListLocks")
        elif what == "locksbig":
            pipelined(c, [{"type": "lock", "id": "l%d" % j, "lockName": ("%06d" % j) + "n" * 250,
                           "sessionId": ("%06d" % j) + "h" * 1018, "lockTimeout": 3600000} for j in range(65536)])
            report("locks 65536 names 256 B holders 1024 B", p, path, addr, {"type": "list_locks"}, "locks", "locks", "ListLocks")
        elif what == "jobs":
            args = {"pad": "a" * 1000}
            pipelined(c, [{"type": "schedule", "id": "j%d" % j, "photonName": "p", "jobId": "job-%05d" % j,
                           "method": "m", "cron": "0 3 * * *", "args": args} for j in range(4096)], W=64)
            report("jobs 4096 args 1 KiB", p, path, addr, {"type": "list_jobs"}, "jobs", "jobs", "ListJobs")
        elif what == "channels":
            pipelined(c, [{"type": "publish", "id": "c%d" % j, "channel": "chan-%06d" % j, "message": {"n": j}}
                          for j in range(65536)])
            report("channels 65536", p, path, addr, {"type": "status", "channelList": True}, "channelList", "channels", "ListChannels")
        elif what == "ps":
            conns = []
            for j in range(5000):
                k = Conn(path)
                k.send({"type": "ping", "id": "p", "sessionId": "session-%05d" % j})
                conns.append(k)
            for k in conns:
                k.recv()
            report("ps 5000 clients", p, path, addr, {"type": "ps"}, "clients", "ps", None)
            for k in conns:
                k.s.close()
    finally:
        p.terminate(); p.wait(); bus.terminate(); bus.wait()
        log = open(home + "/log").read()
        if "disconnecting" in log or os.environ.get("SHOWLOG"):
            print(what + ": photond log: " + log[-600:].replace("\n", " | "))
        shutil.rmtree(home, ignore_errors=True)
