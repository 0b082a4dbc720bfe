"""Cluster mode, property style (issue 11): random operation orders under random timing.

Three daemons; a dozen pod names, each asking for one kind of address (dynamic, a static
`ip_address`, a one-address `ip_pool`). A seeded random sequence of operations runs on
them — create (unbound), bind to a random node, CNI ADD right after, CNI DEL, delete,
re-create under the same name (a new UID, maybe another node) — while the fake API
server delivers watch events late (random per event), charges each write a commit
latency and, when FAKEAPI_TIMING asks, answers some requests 429/500.

Checked throughout: a successful ADD gives a static/pool pod exactly its address; no
two live pods hold the same address (by ADD answer and in the IPBlocks). Checked at the
end, after every pod is deleted: every allocation is released (no leak).
The seed is printed; SUBLEASE_PROPERTY_SEED=N replays a run, SUBLEASE_PROPERTY_STEPS=N
sets its length.
"""
import ipaddress
import json
import os
import random
import subprocess
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import harness  # noqa: E402
from harness import BIN, BLOCKS, PODS  # noqa: E402

P = "prop.default"
NAMES = ["prop-%d" % i for i in range(12)]


def kind_of(name):
    i = int(name.split("-")[1])
    return ("dynamic", "static", "pool")[i % 3]


def wanted(name):
    i = int(name.split("-")[1])
    return {"static": "10.80.0.%d" % (100 + i), "pool": "10.80.0.%d" % (150 + i)}.get(kind_of(name))


def annotations_of(name):
    w = wanted(name)
    if kind_of(name) == "static":
        return {P + ".kubernetes.io/ip_address": w}
    if kind_of(name) == "pool":
        return {P + ".kubernetes.io/ip_pool": w}
    return {}


class RandomOrders(harness.DaemonTestCase):
    NODES = ["node-a", "node-b", "node-c"]
    DAEMON_ARGS = ["--release-grace-ms", "300"]
    PREFIX = "sublease-property-"

    def setUp(self):
        self.seed = int(os.environ.get("SUBLEASE_PROPERTY_SEED") or random.randrange(1 << 30))
        self.steps = int(os.environ.get("SUBLEASE_PROPERTY_STEPS") or 120)
        print("\nproperty seed %d (%d steps); replay with SUBLEASE_PROPERTY_SEED=%d"
              % (self.seed, self.steps, self.seed), file=sys.stderr)
        self.rng = random.Random(self.seed)
        # Random timing on top of whatever the suite set (it never makes delivery faster).
        status, _ = self.api.ctl("POST", "/timing", {
            "watch_delay_ms": {"pods": "0-400", "*": "0-150"}, "write_latency_ms": "1-4",
            "seed": self.seed})
        self.timing = status in (200, 201)
        self.assertTrue(self.timing, "the fake API server takes POST /_fake/timing")

    def cni(self, node, command, name, uid):
        conf = {"cniVersion": "1.0.0", "name": "macvlan", "type": "macvlan",
                "ipam": {"type": "kube-ovn", "server_socket": self.daemons[node]["sock"], "provider": P}}
        env = dict(os.environ, CNI_COMMAND=command, CNI_CONTAINERID="sb-" + uid, CNI_NETNS="/proc/self/ns/net",
                   CNI_IFNAME="net1", CNI_PATH=BIN,
                   CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=%s;K8S_POD_UID=%s" % (name, uid))
        r = subprocess.run([os.path.join(BIN, "sublease")], input=json.dumps(conf), capture_output=True,
                           text=True, env=env, timeout=60)
        return r.returncode, json.loads(r.stdout) if r.stdout.strip() else {}

    def block_holders(self):
        out = {}
        for b in self.req("GET", BLOCKS + "?labelSelector=sublease.io/subnet%3Dprop")["items"]:
            net = ipaddress.ip_network(b["spec"]["cidr"])
            for off, who in (b["spec"].get("allocations") or {}).items():
                addr = str(net.network_address + int(off))
                self.assertNotIn(addr, out, "seed %d: %s twice in the blocks" % (self.seed, addr))
                out[addr] = who
        return out

    def check(self, pods):
        """No two live pods hold one address; each live pod's address is its in the blocks."""
        held = {}
        for name, p in pods.items():
            if p.get("address"):
                other = held.get(p["address"])
                self.assertIsNone(other, "seed %d: %s given to %s and %s" % (self.seed, p["address"], other, name))
                held[p["address"]] = name
        blocks = self.block_holders()
        for addr, name in held.items():
            who = blocks.get(addr)
            self.assertIsNotNone(who, "seed %d: %s answered to %s is in no block" % (self.seed, addr, name))
            if who.get("spare"):
                # Answered from its node's spare, recorded by a later write: the node's.
                self.assertEqual(who["node"], pods[name]["node"], "seed %d: %s answered to %s on %s is a "
                                 "spare of %s" % (self.seed, addr, name, pods[name]["node"], who["node"]))
                continue
            self.assertEqual(who["pod"], name, "seed %d: %s is %s's in the blocks, answered to %s"
                             % (self.seed, addr, who["pod"], name))

    def test_random_operation_orders_keep_every_address_unique_and_as_asked(self):
        self.req("POST", "/apis/kubeovn.io/v1/subnets", harness.subnet("prop", P, "10.80.0.0/24", protocol="IPv4"))
        self.wait_for("the Subnet on every node", lambda: all(
            self.node_knows_subnet(n, "prop") for n in self.NODES), seconds=60)
        pods = {}  # name -> {"uid", "node" (None until bound), "address"}
        ops = {"create": 0, "bind": 0, "add": 0, "add_retry": 0, "del": 0, "delete": 0, "recreate": 0}
        deadline = time.monotonic() + 400
        for step in range(self.steps):
            self.assertLess(time.monotonic(), deadline, "seed %d: the run took too long" % self.seed)
            name = self.rng.choice(NAMES)
            p = pods.get(name)
            if p is None:
                op = "create"
            elif p["node"] is None:
                op = "bind"
            else:
                op = self.rng.choice(["add", "add", "del", "delete", "recreate"])
            ops[op] += 1
            if op in ("delete", "recreate"):
                self.req("DELETE", PODS + "/" + name + "?gracePeriodSeconds=0", ok=(200, 404))
                del pods[name]
                if op == "delete":
                    continue
            if op in ("create", "recreate"):
                created = self.req("POST", PODS, {
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": name, "namespace": "default",
                                 "annotations": dict({"k8s.v1.cni.cncf.io/networks": "prop"}, **annotations_of(name))},
                    "spec": {"containers": [{"name": "c", "image": "alpine"}]}}, ok=(201, 409))
                if "metadata" not in created or "uid" not in created.get("metadata", {}):
                    continue  # the earlier pod of this name is still terminating
                pods[name] = {"uid": created["metadata"]["uid"], "node": None, "address": None}
                continue
            if op == "bind":
                node = self.rng.choice(self.NODES)
                self.req("POST", PODS + "/" + name + "/binding",
                         {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
                          "target": {"apiVersion": "v1", "kind": "Node", "name": node}}, ok=(201,))
                p["node"] = node
                op = "add"  # the kubelet's ADD right after binding
            if op == "add":
                for attempt in range(50):
                    rc, out = self.cni(p["node"], "ADD", name, p["uid"])
                    if rc == 0 or out.get("code") != 11:
                        break
                    ops["add_retry"] += 1
                    time.sleep(0.2)
                if rc == 0:
                    addr = out["ips"][0]["address"].split("/")[0]
                    if wanted(name):
                        self.assertEqual(addr, wanted(name), "seed %d step %d: %s asked for %s"
                                         % (self.seed, step, name, wanted(name)))
                    if p["address"]:
                        self.assertEqual(addr, p["address"], "seed %d: a repeated ADD of %s" % (self.seed, name))
                    p["address"] = addr
                else:
                    # Only a static/pool address an earlier pod of the name still holds
                    # (its release is on its way) may be refused, as a conflict.
                    self.assertIsNotNone(wanted(name), "seed %d step %d: %s: %s" % (self.seed, step, name, out))
                    self.assertIn(out.get("code"), (11, 100, 101, 999), out)
            elif op == "del":
                rc, out = self.cni(p["node"], "DEL", name, p["uid"])
                self.assertEqual(rc, 0, out)
            if step % 10 == 9:
                self.check(pods)
        self.check(pods)
        print("ops: %s" % ops, file=sys.stderr)
        # Converge: every pod deleted, every allocation released.
        for name in list(pods):
            self.req("DELETE", PODS + "/" + name + "?gracePeriodSeconds=0", ok=(200, 404))
        # (The nodes' spares stay: in use by nobody.)
        self.wait_for("every allocation released (seed %d)" % self.seed, lambda: all(
            who.get("spare") for who in self.block_holders().values()), seconds=120, interval=0.5)
        self.api.ctl("DELETE", "/timing")


if __name__ == "__main__":
    unittest.main()
