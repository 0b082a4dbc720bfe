"""Test helpers for the fake API server: start it as a subprocess, talk to it over TLS.

Used by test_fake_apiserver.py; other Python tests may use it too:

    with FakeApiServer() as srv:
        code, hdrs, body = srv.request("GET", "/api/v1/pods")
"""

import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.path.join(HERE, "fake_apiserver.py")
# The recordings of a real kube-apiserver v1.26 (copied from shared/k8s-reference).
REFERENCE = os.environ.get("K8S_REFERENCE_DIR") or os.path.join(HERE, "k8s-reference")


class FakeApiServer:
    def __init__(self, *extra, state_dir=None, port=0, token="test-token", plain=False,
                 start_timeout=30.0, env=None):
        """`env`: variables added to (or, with value None, removed from) the inherited
        environment, e.g. {"FAKEAPI_TIMING": "realistic"}.  The server inherits the
        caller's environment otherwise, so FAKEAPI_* set for a whole suite reach it."""
        self.extra = list(extra)
        self.env = env
        self.own_dir = state_dir is None
        self.dir = state_dir or tempfile.mkdtemp(prefix="fakeapi-")
        self.port = port
        self.token = token
        self.plain = plain
        self.start_timeout = start_timeout
        self.proc = None
        self.info = None
        self.stderr_path = os.path.join(self.dir, "stderr.log")

    # -- lifecycle --
    def start(self):
        ready = os.path.join(self.dir, "ready.json")
        if os.path.exists(ready):
            os.unlink(ready)
        cmd = [sys.executable, SERVER, "--port", str(self.port), "--state-dir",
               os.path.join(self.dir, "state"), "--ready-file", ready, "--token", self.token]
        if self.plain:
            cmd.append("--plain-http")
        cmd += self.extra
        self.stderr = open(self.stderr_path, "ab")
        env = None
        if self.env:
            env = dict(os.environ)
            for k, v in self.env.items():
                if v is None:
                    env.pop(k, None)
                else:
                    env[k] = str(v)
        self.proc = subprocess.Popen(cmd, stdout=self.stderr, stderr=self.stderr, env=env)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("fake apiserver exited early: %s" % self.log())
            if os.path.exists(ready):
                with open(ready) as f:
                    self.info = json.load(f)
                self.port = self.info["port"]
                return self
            time.sleep(0.05)
        self.kill()
        raise RuntimeError("fake apiserver did not become ready: %s" % self.log())

    def stop(self, timeout=15.0):
        """SIGTERM and wait; returns the exit code."""
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
            rc = "timeout"
        self.proc = None
        self.stderr.close()
        return rc

    def kill(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=5)
            self.proc = None
            self.stderr.close()

    def cleanup(self):
        if self.proc is not None:
            self.stop()
        if self.own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def log(self):
        try:
            with open(self.stderr_path, errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def timing_summary(self):
        """A line naming the server's timing (FAKEAPI_TIMING and friends reach it through
        the environment) and the seed that replays it; None when all timing is off."""
        t = (self.info or {}).get("timing") or {}
        if not (t.get("watch_delay_ms") or any(t.get("write_latency_ms") or []) or t.get("throttle_rate")
                or t.get("error_rate")):
            return None
        return "fake API server timing: %s; replay with FAKEAPI_TIMING_SEED=%s" % (
            {k: v for k, v in t.items() if k not in ("counts", "seed")}, t.get("seed"))

    def __enter__(self):
        return self.start()

    def __exit__(self, *a):
        self.cleanup()

    # -- clients --
    def ssl_context(self):
        ctx = ssl.create_default_context(cafile=self.info["ca_file"])
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx

    def connection(self, timeout=10.0):
        if self.plain:
            return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout,
                                           context=self.ssl_context())

    def request(self, method, path, body=None, headers=None, token=None, ctype=None,
                timeout=10.0, conn=None):
        """Returns (status, headers dict with lower-case keys, parsed JSON or raw bytes)."""
        h = {"User-Agent": "fakeapi-test/1.0", "Accept": "application/json"}
        tok = self.token if token is None else token
        if tok:
            h["Authorization"] = "Bearer " + tok
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            h["Content-Type"] = ctype or "application/json"
        h.update(headers or {})
        own = conn is None
        c = conn or self.connection(timeout)
        try:
            c.request(method, path, body=data, headers=h)
            r = c.getresponse()
            raw = r.read()
            hdrs = {k.lower(): v for k, v in r.getheaders()}
        finally:
            if own:
                c.close()
        try:
            return r.status, hdrs, json.loads(raw.decode()) if raw else None
        except ValueError:
            return r.status, hdrs, raw

    def ctl(self, method, route, body=None, timeout=10.0):
        c = http.client.HTTPConnection("127.0.0.1", self.info["control_port"], timeout=timeout)
        try:
            data = json.dumps(body).encode() if body is not None else None
            c.request(method, "/_fake" + route, body=data,
                      headers={"Content-Type": "application/json"} if data else {})
            r = c.getresponse()
            raw = r.read()
            return r.status, json.loads(raw.decode()) if raw else None
        finally:
            c.close()

    def watch(self, path, timeout=10.0, headers=None):
        return RawWatch(self, path, timeout, headers)


class RawWatch:
    """Reads a watch response byte by byte so the chunk framing itself is checked:
    each chunk must carry exactly one JSON line (as in the recordings 21, 30, 32)."""

    def __init__(self, srv, path, timeout=10.0, headers=None):
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=timeout)
        if not srv.plain:
            s = srv.ssl_context().wrap_socket(s, server_hostname="127.0.0.1")
        self.sock = s
        self.f = s.makefile("rb")
        h = {"Host": "127.0.0.1:%d" % srv.port, "User-Agent": "fakeapi-test/1.0",
             "Accept": "application/json", "Authorization": "Bearer " + srv.token}
        h.update(headers or {})
        req = "GET %s HTTP/1.1\r\n%s\r\n" % (path, "".join("%s: %s\r\n" % kv for kv in h.items()))
        s.sendall(req.encode())
        line = self.f.readline(4096).decode()
        self.status = int(line.split()[1])
        self.headers = {}
        for _ in range(100):
            line = self.f.readline(8192).decode()
            if line in ("\r\n", "\n", ""):
                break
            k, _, v = line.partition(":")
            self.headers[k.strip().lower()] = v.strip()
        self.ended = False
        self.body = None
        if "chunked" not in self.headers.get("transfer-encoding", ""):
            n = int(self.headers.get("content-length", "0"))
            self.body = json.loads(self.f.read(n).decode()) if n else None
            self.ended = True

    def next_event(self):
        """The next event, or None when the stream ended with its terminating chunk.
        Raises socket.timeout if nothing arrives in time, ConnectionError if cut."""
        if self.ended:
            return None
        size_line = self.f.readline(64)
        if not size_line:
            raise ConnectionError("watch stream closed without terminating chunk")
        size = int(size_line.strip(), 16)
        if size == 0:
            self.f.readline(8)
            self.ended = True
            return None
        data = self.f.read(size)
        crlf = self.f.read(2)
        if crlf != b"\r\n":
            raise AssertionError("bad chunk framing: %r" % crlf)
        if not data.endswith(b"\n") or data.count(b"\n") != 1:
            raise AssertionError("a chunk must hold exactly one JSON line: %r" % data[:200])
        return json.loads(data.decode())

    def events_until(self, pred, max_seconds=10.0):
        out = []
        deadline = time.monotonic() + max_seconds
        while time.monotonic() < deadline:
            ev = self.next_event()
            if ev is None:
                break
            out.append(ev)
            if pred(out):
                break
        return out

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# -- recordings --

def load_reference(name):
    """Parses a shared/k8s-reference recording: returns a list of (status, headers, body)."""
    path = os.path.join(REFERENCE, name)
    with open(path, "rb") as f:
        text = f.read().decode()
    out = []
    if name.endswith(".raw"):
        i = re.search(r"^HTTP/1\.1 \d+", text, re.M).start()
        head, _, rest = text[i:].partition("\r\n\r\n")
        lines = head.replace("\r\n", "\n").split("\n")
        status = int(lines[0].split()[1])
        hdrs = {l.split(":", 1)[0].strip().lower(): l.split(":", 1)[1].strip() for l in lines[1:] if ":" in l}
        events = []
        pos = 0
        while True:
            j = rest.index("\r\n", pos)
            size = int(rest[pos:j], 16)
            if size == 0:
                break
            data = rest[j + 2:j + 2 + size]
            events.append(json.loads(data))
            pos = j + 2 + size + 2
        return [(status, hdrs, events)]
    # (in 15 the second answer starts right after the first body's closing brace)
    for m in re.finditer(r"(?:^|(?<=\}))HTTP/\S+ (\d+) *\n(.*?)\n\n", text, re.S | re.M):
        status = int(m.group(1))
        hdrs = {l.split(":", 1)[0].strip().lower(): l.split(":", 1)[1].strip()
                for l in m.group(2).split("\n") if ":" in l}
        body_start = m.end()
        nxt = re.search(r"(?:^|(?<=\}))HTTP/\S+ \d+", text[body_start:], re.M)
        body_text = text[body_start: body_start + nxt.start()] if nxt else text[body_start:]
        out.append((status, hdrs, json.loads(body_text)))
    return out


UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
TS_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def normalise(v, key=None):
    """Replaces the values that differ between runs (ids, versions, times)."""
    if isinstance(v, dict):
        return {k: normalise(x, k) for k, x in v.items()}
    if isinstance(v, list):
        return [normalise(x) for x in v]
    if isinstance(v, str):
        if key == "resourceVersion":
            return "<rv>"
        v = UUID_RE.sub("<uid>", v)
        v = TS_RE.sub("<ts>", v)
        if key == "message":
            v = re.sub(r"\d+", "<n>", v)
        return v
    return v
