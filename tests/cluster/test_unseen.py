"""Cluster mode: a CNI ADD that outruns the watch (issue 11, "never decide from state you
have not seen").

The kubelet runs the CNI ADD right after the pod is bound and waits for no one's watch,
so a node often gets the ADD for a pod its informer has not delivered yet. Here that is
made certain, not left to timing: once the daemons are ready, every pod list and watch
(`/api/v1/pods?...`) fails, so the daemons learn of a pod only by reading it
(`GET /api/v1/namespaces/<ns>/pods/<name>`). Pods are created unbound, bound through the
`binding` subresource, and given their ADD at once. Each one must get exactly what it
asked for — a static address (flat and per-interface), the networks annotation's `ips`,
a one-address `ip_pool`, a StatefulSet ordinal's pool entry, `ip_family` — never an
address from the node's block; an ADD for a pod that does not exist, or for a UID the
pod no longer has, is refused; one whose pod cannot be read gets CNI 11.
The same flows run with the fake API server's realistic timing where the suite sets
FAKEAPI_TIMING (tests/CMakeLists.txt).
"""
import ipaddress
import json
import os
import subprocess
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import harness  # noqa: E402
from harness import BIN, BLOCKS, PODS  # noqa: E402

P = "macvlan.default"
DUAL = "dual.default"
STS_PATH = "/apis/apps/v1/namespaces/default/statefulsets"


def unbound_pod(name, annotations, networks="macvlan", owner=None):
    meta = {"name": name, "namespace": "default",
            "annotations": dict({"k8s.v1.cni.cncf.io/networks": networks}, **annotations)}
    if owner:
        meta["ownerReferences"] = [owner]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"containers": [{"name": "c", "image": "alpine"}]}}


class UnseenPods(harness.DaemonTestCase):
    NODES = ["node-a", "node-b", "node-c"]
    DAEMON_ARGS = ["--release-grace-ms", "300"]
    PREFIX = "sublease-unseen-"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        api = cls.api
        # The seed's Subnet, and a dual-stack one for ip_family.
        for name, provider, cidr, gw, exclude, proto in [
                ("macvlan", P, "172.17.0.0/16", "172.17.0.1", ["172.17.0.0..172.17.0.10"], "IPv4"),
                ("dual", DUAL, "10.70.0.0/24,fd70::/120", None, [], "Dual")]:
            status, _, obj = api.request("POST", "/apis/kubeovn.io/v1/subnets",
                                         harness.subnet(name, provider, cidr, gw, exclude, protocol=proto),
                                         timeout=30)
            assert status == 201, obj
        # Every daemon has the Subnets (stored from its watch).
        deadline = time.monotonic() + 60
        for node in cls.NODES:
            while not all(cls.node_knows_subnet(cls, node, name) for name in ("macvlan", "dual")):
                if time.monotonic() > deadline:
                    raise RuntimeError("the Subnets never reached " + node + ": " + cls.daemon_log(node))
                time.sleep(0.1)
        cls.blind_pod_feeds()

    @classmethod
    def blind_pod_feeds(cls):
        """From now on the daemons' pod lists and watches fail: they see no pod unless they
        read it by name. Open watches are cut so that they reconnect into the fault."""
        status, _ = cls.api.ctl("POST", "/faults", {"path_prefix": "/api/v1/pods", "count": -1,
                                                     "status": 500, "message": "pod feed blinded by the test"})
        assert status == 201
        cls.api.ctl("POST", "/drop-watches", {"mode": "abort"})

    @classmethod
    def run_cni(cls, node, command, pod_name, container, uid, provider=P, ifname="net1"):
        conf = {"cniVersion": "1.0.0", "name": "macvlan", "type": "macvlan",
                "ipam": {"type": "kube-ovn", "server_socket": cls.daemons[node]["sock"], "provider": provider}}
        args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=%s" % pod_name
        if uid:
            args += ";K8S_POD_UID=%s" % uid
        env = dict(os.environ, CNI_COMMAND=command, CNI_CONTAINERID=container, CNI_NETNS="/proc/self/ns/net",
                   CNI_IFNAME=ifname, CNI_PATH=BIN, CNI_ARGS=args)
        r = subprocess.run([os.path.join(BIN, "sublease")], input=json.dumps(conf), capture_output=True,
                           text=True, env=env, timeout=60)
        return r.returncode, json.loads(r.stdout) if r.stdout.strip() else {}

    def create_and_bind(self, name, node, annotations, networks="macvlan", owner=None):
        created = self.req("POST", PODS, unbound_pod(name, annotations, networks, owner))
        self.req("POST", PODS + "/" + name + "/binding",
                 {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
                  "target": {"apiVersion": "v1", "kind": "Node", "name": node}}, ok=(201,))
        return created["metadata"]["uid"]

    def add_now(self, name, node, uid, provider=P, ifname="net1"):
        """The ADD right after binding; a CNI 11 (try again) is retried as the kubelet does."""
        deadline = time.monotonic() + 60
        while True:
            rc, out = self.run_cni(node, "ADD", name, "sb-" + name, uid, provider, ifname)
            if rc == 0 or out.get("code") != 11 or time.monotonic() > deadline:
                self.assertEqual(rc, 0, "%s on %s: %s\n%s" % (name, node, out, self.daemon_log(node)[-1500:]))
                return [ip["address"].split("/")[0] for ip in out["ips"]]
            time.sleep(0.2)

    def test_1_every_annotation_kind_is_honoured_for_a_pod_the_node_has_not_seen(self):
        sts = self.req("POST", STS_PATH, {
            "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "web"},
            "spec": {"replicas": 3, "serviceName": "web", "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "c", "image": "alpine"}]}}}})
        sts_owner = {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web",
                     "uid": sts["metadata"]["uid"], "controller": True}
        cases = []  # (pod, node, annotations, networks, owner, provider, expected addresses)
        for i in range(5):
            node = self.NODES[i % 3]
            cases += [
                ("static-%d" % i, node, {P + ".kubernetes.io/ip_address": "172.17.5.%d" % (20 + i)},
                 "macvlan", None, P, ["172.17.5.%d" % (20 + i)]),
                ("per-if-%d" % i, node, {P + ".kubernetes.io/ip_address.net1": "172.17.6.%d" % (40 + i)},
                 "macvlan", None, P, ["172.17.6.%d" % (40 + i)]),
                ("multus-ips-%d" % i, node, {},
                 json.dumps([{"name": "macvlan", "ips": ["172.17.7.%d/16" % (60 + i)], "mac": "02:00:00:00:07:%02x" % i}]),
                 None, P, ["172.17.7.%d" % (60 + i)]),
                ("pool-%d" % i, node, {P + ".kubernetes.io/ip_pool": "172.17.8.%d" % (80 + i)},
                 "macvlan", None, P, ["172.17.8.%d" % (80 + i)]),
                ("v6only-%d" % i, node, {DUAL + ".kubernetes.io/ip_family": "ipv6"},
                 "dual", None, DUAL, None),
            ]
        # The StatefulSet member with ordinal 1 takes pool entry [1], on every node in turn.
        cases.append(("web-1", "node-b", {P + ".kubernetes.io/ip_pool": "172.17.0.50,172.17.0.51,172.17.0.52"},
                      "macvlan", sts_owner, P, ["172.17.0.51"]))
        for name, node, annotations, networks, owner, provider, want in cases:
            uid = self.create_and_bind(name, node, annotations, networks, owner)
            got = self.add_now(name, node, uid, provider)
            if want is None:  # ip_family ipv6: one address, IPv6, from the dual-stack Subnet
                self.assertEqual(len(got), 1, got)
                self.assertIn(":", got[0], "%s asked for ipv6 only: %s" % (name, got))
            else:
                self.assertEqual(got, want, "%s asked for %s" % (name, want))
        # Every ADD read its pod: the nodes never saw one through the feed.
        status, log = self.api.ctl("GET", "/requests")
        gets = [r for r in log["requests"] if r["method"] == "GET" and r["path"].startswith(PODS + "/")]
        self.assertGreaterEqual(len(gets), len(cases))
        # The seed's StatefulSet flow: web-1 deleted, re-created on another node, ADD at
        # once: it keeps 172.17.0.51 (adopted from node-b's allocation).
        self.req("DELETE", PODS + "/web-1?gracePeriodSeconds=0")
        self.wait_for("web-1 gone", lambda: self.get(PODS + "/web-1") is None, seconds=30)
        uid = self.create_and_bind("web-1", "node-c", cases[-1][2], "macvlan", sts_owner)
        self.assertEqual(self.add_now("web-1", "node-c", uid), ["172.17.0.51"])
        self.req("DELETE", STS_PATH + "/web")

    def test_2_a_pod_that_does_not_exist_or_is_another_uid_gets_an_error_not_an_address(self):
        rc, out = self.settled(lambda: self.run_cni("node-a", "ADD", "never-created", "sb-x", "uid-x"))
        self.assertNotEqual(rc, 0)
        self.assertIn("does not exist", json.dumps(out))
        uid = self.create_and_bind("renamed", "node-a", {})
        rc, out = self.settled(lambda: self.run_cni("node-a", "ADD", "renamed", "sb-r", "uid-of-an-older-pod"))
        self.assertNotEqual(rc, 0)
        self.assertIn("no longer exists", json.dumps(out))
        # Bound to another node: refused here.
        rc, out = self.settled(lambda: self.run_cni("node-b", "ADD", "renamed", "sb-r", uid))
        self.assertNotEqual(rc, 0)
        self.assertIn("node-a", json.dumps(out))
        # No allocation was made for any of them.
        self.assertEqual(self.add_now("renamed", "node-a", uid)[0].split(".")[:2], ["172", "17"])
        status, blocks = self.api.ctl("GET", "/objects")
        names = json.dumps(blocks)
        self.assertNotIn("never-created", names)

    def test_3_a_pod_that_cannot_be_read_gets_try_again_never_a_guess(self):
        uid = self.create_and_bind("unreadable", "node-c", {P + ".kubernetes.io/ip_address": "172.17.9.9"})
        # The next read of it fails (a 500 without Retry-After: no client retries it).
        status, _ = self.api.ctl("POST", "/faults", {"method": "GET", "path_prefix": PODS + "/unreadable",
                                                     "count": 1, "status": 500})
        self.assertEqual(status, 201)
        rc, out = self.run_cni("node-c", "ADD", "unreadable", "sb-u", uid)
        self.assertNotEqual(rc, 0)
        self.assertEqual(out.get("code"), 11, out)
        self.assertIn("try again", json.dumps(out))
        self.assertEqual(self.add_now("unreadable", "node-c", uid), ["172.17.9.9"])

    def test_5_an_add_for_a_subnet_the_node_has_not_received_is_try_again_not_no_subnet(self):
        # The Subnets' watch events reach the nodes 4 s late; a pod of a brand-new Subnet is
        # created, bound and ADDed at once (the kubelet waits for no one's watch).
        _, timing = self.api.ctl("GET", "/timing")
        delays = dict(timing.get("watch_delay_ms") or {})
        status, _ = self.api.ctl("POST", "/timing", {"watch_delay_ms": dict(delays, subnets="4000-4000")})
        self.assertIn(status, (200, 201))
        try:
            late = "late.default"
            self.req("POST", "/apis/kubeovn.io/v1/subnets",
                     harness.subnet("late", late, "10.71.0.0/24", "10.71.0.1", ["10.71.0.1..10.71.0.9"]))
            uid = self.create_and_bind("early", "node-b", {late + ".kubernetes.io/ip_address": "10.71.0.33"},
                                       networks="late")
            rc, out = self.settled(lambda: self.run_cni("node-b", "ADD", "early", "sb-early", uid, late),
                                   expect="Subnet late")
            self.assertNotEqual(rc, 0)
            self.assertEqual(out.get("code"), 11, "try again, not a permanent 'no Subnet': %s" % out)
            self.assertIn("Subnet late", json.dumps(out))
            # Once the watch delivers it, the retried ADD gets the address asked for.
            self.assertEqual(self.add_now("early", "node-b", uid, late), ["10.71.0.33"])
        finally:
            self.api.ctl("POST", "/timing", {"watch_delay_ms": delays})
        # A provider no Subnet has is still a clear error, after the read.
        uid = self.create_and_bind("nosubnet", "node-c", {}, networks="nowhere")
        rc, out = self.settled(lambda: self.run_cni("node-c", "ADD", "nosubnet", "sb-nowhere", uid, "nowhere.default"))
        self.assertNotEqual(rc, 0)
        self.assertNotEqual(out.get("code"), 11, out)
        self.assertIn("no Subnet has spec.provider nowhere.default", json.dumps(out))

    def holder(self, ip):
        for b in self.req("GET", BLOCKS)["items"]:
            net = ipaddress.ip_network(b["spec"]["cidr"])
            for off, who in (b["spec"].get("allocations") or {}).items():
                if str(net.network_address + int(off)) == ip:
                    return who
        return None

    def test_4_a_pod_re_created_under_its_name_between_bind_and_add(self):
        key = P + ".kubernetes.io/ip_address"
        uid = self.create_and_bind("swap", "node-a", {key: "172.17.10.30"})
        self.assertEqual(self.add_now("swap", "node-a", uid), ["172.17.10.30"])
        # Re-created with another static address; the node never saw the deletion.
        self.req("DELETE", PODS + "/swap?gracePeriodSeconds=0")
        self.wait_for("swap gone", lambda: self.get(PODS + "/swap") is None, seconds=30)
        uid2 = self.create_and_bind("swap", "node-a", {key: "172.17.10.31"})
        self.assertEqual(self.add_now("swap", "node-a", uid2), ["172.17.10.31"],
                         "the new pod gets what it asks for, not its predecessor's lease")
        self.assertIsNone(self.holder("172.17.10.30"), "the predecessor's address was released")
        # Re-created asking for the same address: it keeps it, under the new UID.
        self.req("DELETE", PODS + "/swap?gracePeriodSeconds=0")
        self.wait_for("swap gone", lambda: self.get(PODS + "/swap") is None, seconds=30)
        uid3 = self.create_and_bind("swap", "node-a", {key: "172.17.10.31"})
        self.assertEqual(self.add_now("swap", "node-a", uid3), ["172.17.10.31"])
        self.assertEqual(self.holder("172.17.10.31")["podUID"], uid3, "the block names the new pod")
        # An ADD still naming the first pod's UID is refused.
        rc, out = self.run_cni("node-a", "ADD", "swap", "sb-old", uid)
        self.assertNotEqual(rc, 0, out)


if __name__ == "__main__":
    unittest.main()
