"""Shared harness for the cluster-mode tests: subleased daemons (each its own node name,
socket and database) against the project's fake Kubernetes API server over TLS.

A test class derives from DaemonTestCase, sets NODES (and DAEMON_ARGS, CREATE_NODES),
and gets the API server and the daemons for the whole class. Every wait is bounded;
everything is stopped in tearDownClass.
"""
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "fakeapi"))
from fakeapi_client import FakeApiServer  # noqa: E402

BIN = os.environ.get("SUBLEASE_BIN") or os.path.join(HERE, "..", "..", "build", "bin")
SUBNETS = "/apis/kubeovn.io/v1/subnets"
BLOCKS = "/apis/sublease.io/v1alpha1/ipblocks"
PODS = "/api/v1/namespaces/default/pods"


def subnet(name, provider, cidr, gateway=None, exclude=(), protocol=None):
    """A kubeovn.io/v1 Subnet object."""
    spec = {"provider": provider, "cidrBlock": cidr}
    if protocol:
        spec["protocol"] = protocol
    if gateway:
        spec["gateway"] = gateway
    if exclude:
        spec["excludeIps"] = list(exclude)
    return {"apiVersion": "kubeovn.io/v1", "kind": "Subnet", "metadata": {"name": name}, "spec": spec}


def pod(name, node, networks, annotations=None, owner=None):
    """A pod already bound to `node`, attached to `networks` (the Multus annotation)."""
    meta = {"name": name, "namespace": "default",
            "annotations": dict({"k8s.v1.cni.cncf.io/networks": networks}, **(annotations or {}))}
    if owner:
        meta["ownerReferences"] = [owner]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "alpine"}]}}


def free_port():
    """A free TCP port on loopback (for a daemon's --metrics-address, a proxy)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metric_counters(address, family, label="event"):
    """The samples of counter `family` (e.g. sublease_shard_total) on the daemon's
    /metrics at `address`, by their `label`; and the whole text."""
    with urllib.request.urlopen("http://%s/metrics" % address, timeout=10) as r:
        text = r.read().decode()
    counters = {}
    for line in text.splitlines():
        if line.startswith(family + "{"):
            counters[line.split(label + '="')[1].split('"')[0]] = float(line.rsplit(" ", 1)[1])
    return counters, text


class DaemonTestCase(unittest.TestCase):
    NODES = ["node-0"]
    DAEMON_ARGS = []       # extra subleased flags
    CREATE_NODES = False   # create Node objects (the leader deletes blocks of absent nodes)
    PREFIX = "sublease-cluster-"

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix=cls.PREFIX)
        os.makedirs(os.path.join(cls.dir, "api"))
        cls.api = FakeApiServer("--pod-grace-scale", "0", "--bookmark-interval", "1",
                                state_dir=os.path.join(cls.dir, "api")).start()
        if cls.api.timing_summary():
            print("\n" + cls.api.timing_summary(), file=sys.stderr)
        cls.kubeconfig = cls.daemon_kubeconfig()
        if cls.CREATE_NODES:
            for node in cls.NODES:
                cls.api.request("POST", "/api/v1/nodes",
                                {"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}}, timeout=30)
        cls.daemons = {}
        for node in cls.NODES:
            cls.start_daemon(node)
        for node in cls.NODES:
            cls.wait_ready(node)

    @classmethod
    def daemon_kubeconfig(cls):
        """The kubeconfig the daemons get (a test may put something in front of the API)."""
        return cls.api.info["kubeconfig"]

    @classmethod
    def tearDownClass(cls):
        for node in list(cls.daemons):
            cls.stop_daemon(node)
        cls.api.cleanup()
        if os.environ.get("SUBLEASE_KEEP_TEST_DIR"):  # daemon logs and databases, for a post-mortem
            print("kept %s" % cls.dir, file=sys.stderr)
        else:
            shutil.rmtree(cls.dir, ignore_errors=True)

    @classmethod
    def start_daemon(cls, node, extra_args=()):
        sock = os.path.join(cls.dir, node + ".sock")
        log = open(os.path.join(cls.dir, node + ".log"), "ab")
        proc = subprocess.Popen(
            [os.path.join(BIN, "subleased"), "--kubeconfig", cls.kubeconfig, "--node-name", node,
             "--socket", sock, "--db", os.path.join(cls.dir, node + ".db")]
            + ([] if "--metrics-address" in extra_args else ["--metrics-address", ""])
            + list(cls.DAEMON_ARGS) + list(extra_args)
            # A whole suite with other daemon flags, e.g. "--spare-addresses 8" (not in CI).
            + shlex.split(os.environ.get("SUBLEASE_TEST_DAEMON_ARGS", "")), stdout=log, stderr=log)
        cls.daemons[node] = {"proc": proc, "sock": sock, "log": log}

    @classmethod
    def stop_daemon(cls, node, sig=signal.SIGTERM):
        d = cls.daemons.pop(node)
        d["proc"].send_signal(sig)
        try:
            d["proc"].wait(timeout=15)
        except subprocess.TimeoutExpired:
            d["proc"].kill()
            d["proc"].wait(timeout=5)
        d["log"].close()

    @classmethod
    def kill_daemon(cls, node):
        """kill -9: no clean shutdown, nothing saved on the way out."""
        cls.stop_daemon(node, signal.SIGKILL)

    @classmethod
    def wait_ready(cls, node, seconds=30):
        sock = cls.daemons[node]["sock"]
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if cls.daemons[node]["proc"].poll() is not None:
                raise RuntimeError("subleased on %s exited: %s" % (node, cls.daemon_log(node)))
            r = subprocess.run(["curl", "-sf", "--max-time", "2", "--unix-socket", sock,
                                "http://x/v1/cni/status"], capture_output=True)
            if r.returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError("subleased on %s not ready in %d s: %s" % (node, seconds, cls.daemon_log(node)))

    @classmethod
    def daemon_log(cls, node):
        try:
            with open(os.path.join(cls.dir, node + ".log"), errors="replace") as f:
                return f.read()[-3000:]
        except OSError:
            return ""

    # -- API helpers --
    def req(self, method, path, body=None, ctype=None, ok=(200, 201)):
        status, _, obj = self.api.request(method, path, body, ctype=ctype, timeout=30)
        self.assertIn(status, ok, "%s %s -> %s %s" % (method, path, status, obj))
        return obj

    def get(self, path):
        status, _, obj = self.api.request("GET", path, timeout=30)
        return obj if status == 200 else None

    def run_cni(self, node, command, pod_name, container, uid, provider):
        """The plugin run as a runtime would (default/pod_name, net1); (rc, reply)."""
        conf = {"cniVersion": "1.0.0", "name": "macvlan", "type": "macvlan",
                "ipam": {"type": "kube-ovn", "server_socket": self.daemons[node]["sock"], "provider": provider}}
        args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=%s;K8S_POD_UID=%s" % (pod_name, uid)
        env = dict(os.environ, CNI_COMMAND=command, CNI_CONTAINERID=container, CNI_NETNS="/proc/self/ns/net",
                   CNI_IFNAME="net1", CNI_PATH=BIN, CNI_ARGS=args)
        r = subprocess.run([os.path.join(BIN, "sublease")], input=json.dumps(conf), capture_output=True,
                           text=True, env=env, timeout=60)
        return r.returncode, json.loads(r.stdout) if r.stdout.strip() else {}

    def add_retrying(self, node, name, uid, provider, seconds=60):
        """CNI ADD (container sb-<name>), retried on CNI 11 as the kubelet does; (rc, reply)."""
        deadline = time.monotonic() + seconds
        while True:
            rc, out = self.run_cni(node, "ADD", name, "sb-" + name, uid, provider)
            if rc == 0 or out.get("code") != 11 or time.monotonic() > deadline:
                return rc, out
            time.sleep(0.2)

    def node_knows_subnet(self, node, name):
        """True once `node`'s daemon has stored Subnet `name` (it came through its watch)."""
        db = os.path.join(self.dir, node + ".db")
        out = subprocess.run(["sqlite3", "file:%s?mode=ro" % db,
                              "select count(*) from subnets where name = '%s'" % name],
                             capture_output=True, text=True, timeout=30)
        return out.returncode == 0 and out.stdout.strip() == "1"

    def wait_subnet_seen(self, name, seconds=30):
        """Waits (bounded) until every running daemon has seen Subnet `name` through its
        watch; a fixed sleep is wrong once watch events arrive late (FAKEAPI_TIMING)."""
        for node in list(self.daemons):
            self.wait_for("%s sees Subnet %s" % (node, name),
                          lambda: self.node_knows_subnet(node, name), seconds=seconds)

    def settled(self, call, expect=None, tries=10):
        """`call()` (a CNI ADD: returns rc, out), called again while its answer is "try
        again" (CNI 11) because a read of the API server failed — realistic timing answers
        some reads 500 or 429 — unless the answer already says `expect`. Bounded; returns
        the last answer. For checks of one particular error."""
        for _ in range(tries):
            rc, out = call()
            text = json.dumps(out)
            if rc == 0 or out.get("code") != 11 or (expect and expect in text):
                return rc, out
            if not any(s in text for s in ("InternalError", "429", "timed out", "Too Many")):
                return rc, out
            time.sleep(0.3)
        return rc, out

    def allocation_of(self, pod_name):
        """The IPBlock allocation of pod default/`pod_name` in any block (a dict with pod,
        containerID, node, ...), or None."""
        for b in self.get(BLOCKS)["items"]:
            for who in (b.get("spec", {}).get("allocations") or {}).values():
                if who.get("pod") == pod_name:
                    return who
        return None

    def log_times(self, node, text, count, seconds=120):
        """When each of the first `count` occurrences of `text` showed up in `node`'s log
        (polled every 0.1 s, for at most `seconds`; fails if fewer came)."""
        seen = []
        deadline = time.monotonic() + seconds
        while len(seen) < count and time.monotonic() < deadline:
            n = self.daemon_log(node).count(text)
            seen += [time.monotonic()] * (n - len(seen))
            time.sleep(0.1)
        self.assertEqual(len(seen), count, "%d times %r in %s's log within %d s" % (count, text, node, seconds))
        return seen

    def assert_backs_off(self, times):
        """Four tries 1, 2, 4 s apart (first wait 1 s, doubling; + up to 1 s where tries
        are due on a 1 s tick): without a backoff every gap is 1-2 s. Lower bounds only:
        a slow machine makes gaps longer, never shorter."""
        gaps = [b - a for a, b in zip(times, times[1:])]
        self.assertGreaterEqual(gaps[2], 3.0, gaps)
        self.assertGreater(gaps[2], gaps[0] + 1.5, gaps)

    def wait_for(self, what, fn, seconds=60, interval=0.1):
        deadline = time.monotonic() + seconds
        last = None
        while time.monotonic() < deadline:
            last = fn()
            if last:
                return last
            time.sleep(interval)
        self.fail("timed out after %d s waiting for %s (last: %r)\n%s" % (
            seconds, what, last, "\n".join(self.daemon_log(n)[-1000:] for n in list(self.daemons)[:3])))
