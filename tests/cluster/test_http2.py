"""Cluster mode over HTTP/2 (issue: cluster mode, "HTTP/2 where the server offers it").

The fake API server speaks HTTP/1.1 only. Here Debian's nghttpx (package nghttp2-proxy,
the nghttp2 project's reverse proxy) stands in front of it on loopback: it terminates
TLS with the fake server's certificate and offers h2 by ALPN, and forwards each stream
to the fake server over HTTP/1.1 + TLS. Two daemons get a kubeconfig that points at
nghttpx. What it shows:
  - the daemons negotiate HTTP/2 (nghttpx's access log: ALPN "h2" for every request
    with subleased's User-Agent, none over HTTP/1.1);
  - over it, lists, watches (the pods arrive through them), IPBlock creates/updates and
    pod patches work: the pods get their addresses and annotations.
Run: python3 -m unittest discover -s tests/cluster -p 'test_http2.py' -v  (SUBLEASE_BIN=build/bin)
"""
import os
import shutil
import socket
import subprocess
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import harness  # noqa: E402
from harness import PODS, SUBNETS, free_port, pod, subnet  # noqa: E402

NGHTTPX = shutil.which("nghttpx") or "/usr/sbin/nghttpx"


class Http2(harness.DaemonTestCase):
    NODES = ["node-0", "node-1"]
    PREFIX = "sublease-http2-"
    proxy = None

    @classmethod
    def daemon_kubeconfig(cls):
        if not os.path.exists(NGHTTPX):
            raise RuntimeError("nghttpx not found: install Debian's nghttp2-proxy (scripts/install-deps.sh)")
        info = cls.api.info
        port = free_port()
        cls.access_log = os.path.join(cls.dir, "nghttpx-access.log")
        cls.proxy_log = open(os.path.join(cls.dir, "nghttpx.log"), "ab")
        cls.proxy = subprocess.Popen(
            [NGHTTPX, "--frontend=127.0.0.1,%d" % port,
             "--backend=127.0.0.1,%d;;tls" % info["port"], "--insecure",  # the backend is the fake server
             "--workers=1", "--no-ocsp", "--accesslog-file=" + cls.access_log,
             "--accesslog-format=$alpn $method $status $http_user_agent $path",
             "--backend-read-timeout=15m", "--frontend-read-timeout=15m",
             "--frontend-http2-read-timeout=15m", "--stream-read-timeout=0",
             os.path.join(os.path.dirname(info["cert_file"]), "server.key"), info["cert_file"]],
            stdout=cls.proxy_log, stderr=cls.proxy_log)
        deadline = time.monotonic() + 30
        while True:
            if cls.proxy.poll() is not None:
                raise RuntimeError("nghttpx exited: see %s" % cls.proxy_log.name)
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("nghttpx did not listen on port %d" % port)
                time.sleep(0.05)
        with open(info["kubeconfig"]) as f:
            text = f.read()
        api_url = "https://127.0.0.1:%d" % info["port"]
        assert api_url in text, text
        path = os.path.join(cls.dir, "kubeconfig-h2")
        with open(path, "w") as f:
            f.write(text.replace(api_url, "https://127.0.0.1:%d" % port))
        os.chmod(path, 0o600)
        return path

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        if cls.proxy is not None:
            cls.proxy.terminate()
            try:
                cls.proxy.wait(timeout=10)
            except subprocess.TimeoutExpired:
                cls.proxy.kill()
                cls.proxy.wait(timeout=5)
            cls.proxy_log.close()

    def test_daemons_speak_http2_to_the_api_server(self):
        p = "h2.default"
        self.req("POST", SUBNETS, subnet("h2", p, "10.110.0.0/24"))
        self.wait_subnet_seen("h2")
        names = ["h2-%d" % i for i in range(6)]
        for i, name in enumerate(names):
            self.req("POST", PODS, pod(name, self.NODES[i % 2], "h2"))
        got = {}
        for name in names:
            a = self.wait_for(name + " annotated over HTTP/2",
                              lambda: (lambda x: x if x.get(p + ".kubernetes.io/allocated") == "true" else None)(
                                  self.pod_annotations(name)), seconds=60)
            got[name] = a[p + ".kubernetes.io/ip_address"]
        self.assertEqual(len(set(got.values())), len(names), got)

        def daemon_requests():
            with open(self.access_log) as f:
                lines = [line.split(" ", 4) for line in f if " subleased/" in line]
            return lines if any(m == "PATCH" for _, m, _, _, _ in lines) else None
        lines = self.wait_for("the daemons' requests in nghttpx's access log", daemon_requests, seconds=30)
        protocols = {alpn for alpn, _, _, _, _ in lines}
        self.assertEqual(protocols, {"h2"}, "ALPN of subleased's requests: %s" % protocols)
        verbs = {m for _, m, _, _, _ in lines}
        self.assertTrue({"GET", "POST", "PATCH"} <= verbs, verbs)

    def pod_annotations(self, name):
        status, _, obj = self.api.request("GET", PODS + "/" + name, timeout=30)
        return obj["metadata"].get("annotations", {}) if status == 200 else {}


if __name__ == "__main__":
    unittest.main()
