"""Cluster mode: Kube-OVN's named IPPools (issue 13), across several daemons.

`<provider>.kubernetes.io/ip_pool: <name>` (one token that is not an address) names a
kubeovn.io/v1 IPPool: the pod gets the lowest free address of the pool, wherever its
block is (a pool spans blocks of several nodes: the addresses in another node's block
are borrowed through the block protocol). Every node watches the IPPools, so no node's
dynamic pick ever lands in a pool. The later of two overlapping pools is not Ready; a
pool of another Subnet, a missing pool and a pool this node's watch has not delivered
yet are handled as the issue says (an error naming what is wrong, an allocation once
the pool appears, a read of the pool by name). The leader writes each pool's status.
Run: SUBLEASE_BIN=build/bin python3 -m unittest tests/cluster/test_ippool.py -v
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
from harness import BLOCKS, PODS, SUBNETS, pod  # noqa: E402

IPPOOLS = "/apis/kubeovn.io/v1/ippools"
P = "pooled.default"
OTHER = "other.default"
DUAL = "dualp.default"


def ippool(name, subnet, ips):
    return {"apiVersion": "kubeovn.io/v1", "kind": "IPPool", "metadata": {"name": name},
            "spec": {"subnet": subnet, "ips": list(ips)}}


def in_range(ip, first, last):
    a = ipaddress.ip_address(ip)
    return ipaddress.ip_address(first) <= a <= ipaddress.ip_address(last)


class IpPools(harness.DaemonTestCase):
    NODES = ["node-a", "node-b", "node-c"]
    DAEMON_ARGS = ["--release-grace-ms", "300", "--ip-objects=true"]  # test 6b: IP objects (off by default)
    PREFIX = "sublease-ippool-"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        for s in (harness.subnet("pooled", P, "10.80.0.0/24", "10.80.0.1", protocol="IPv4"),
                  harness.subnet("other", OTHER, "10.81.0.0/24", "10.81.0.1", protocol="IPv4"),
                  harness.subnet("dualp", DUAL, "10.82.0.0/24,fd82::/120", protocol="Dual")):
            status, _, obj = cls.api.request("POST", SUBNETS, s, timeout=30)
            assert status == 201, obj

    # -- helpers --
    def allocated(self, name, provider=P):
        status, _, obj = self.api.request("GET", PODS + "/" + name, timeout=30)
        a = obj["metadata"].get("annotations", {}) if status == 200 else {}
        return a.get(provider + ".kubernetes.io/ip_address") if a.get(provider + ".kubernetes.io/allocated") == "true" else None

    def create_pool(self, name, subnet, ips):
        return self.req("POST", IPPOOLS, ippool(name, subnet, ips))

    def pool_status(self, name):
        obj = self.get(IPPOOLS + "/" + name)
        return (obj or {}).get("status") or {}

    def ready_condition(self, name):
        for c in self.pool_status(name).get("conditions") or []:
            if c.get("type") == "Ready":
                return c
        return None

    def wait_pool_ready(self, name):
        self.wait_for("IPPool %s Ready" % name,
                      lambda: (self.ready_condition(name) or {}).get("status") == "True", seconds=60)

    def pod_with_pool(self, name, node, pool, provider=P, networks="pooled", extra=None):
        annotations = {provider + ".kubernetes.io/ip_pool": pool}
        annotations.update(extra or {})
        return self.req("POST", PODS, pod(name, node, networks, annotations))

    def events_of(self, name):
        obj = self.req("GET", "/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3D" + name)
        return obj["items"]

    def block_of(self, ip):
        """(node of the block, node of the allocation) holding `ip` in Subnet pooled."""
        for b in self.req("GET", BLOCKS + "?labelSelector=sublease.io/subnet%3Dpooled")["items"]:
            net = ipaddress.ip_network(b["spec"]["cidr"])
            if ipaddress.ip_address(ip) in net:
                who = (b["spec"].get("allocations") or {}).get(str(int(ipaddress.ip_address(ip)) - int(net.network_address)))
                return b["spec"]["node"], who and who.get("node")
        return None, None

    def block_allocs(self):
        out = []
        for b in self.req("GET", BLOCKS + "?labelSelector=sublease.io/subnet%3Dpooled")["items"]:
            net = ipaddress.ip_network(b["spec"]["cidr"])
            for off, who in (b["spec"].get("allocations") or {}).items():
                out.append((str(net.network_address + int(off)), who["namespace"] + "/" + who["pod"], who.get("node")))
        return out

    def run_cni(self, node, command, pod_name, container, uid, provider=P):
        return super().run_cni(node, command, pod_name, container, uid, provider)

    def add(self, node, name, uid, provider=P):
        return self.add_retrying(node, name, uid, provider)

    # -- tests --
    def test_1_a_pool_spanning_two_nodes_blocks_gives_its_lowest_free_addresses_on_every_node(self):
        # Static pods make the two blocks of the pool node-a's and node-b's.
        self.req("POST", PODS, pod("anchor-a", "node-a", "pooled", {P + ".kubernetes.io/ip_address": "10.80.0.17"}))
        self.req("POST", PODS, pod("anchor-b", "node-b", "pooled", {P + ".kubernetes.io/ip_address": "10.80.0.25"}))
        self.wait_for("anchor-a", lambda: self.allocated("anchor-a"))
        self.wait_for("anchor-b", lambda: self.allocated("anchor-b"))
        self.assertEqual(self.block_of("10.80.0.17")[0], "node-a")
        self.assertEqual(self.block_of("10.80.0.25")[0], "node-b")
        self.create_pool("blue", "pooled", ["10.80.0.18..10.80.0.22", "10.80.0.26..10.80.0.28"])
        self.wait_pool_ready("blue")
        want = ["10.80.0.18", "10.80.0.19", "10.80.0.20", "10.80.0.21", "10.80.0.22",
                "10.80.0.26", "10.80.0.27", "10.80.0.28"]
        nodes = ["node-c", "node-a", "node-b"]
        for i, ip in enumerate(want):
            name = "blue-%d" % i
            self.pod_with_pool(name, nodes[i % 3], "blue")
            got = self.wait_for(name + " allocated", lambda: self.allocated(name))
            self.assertEqual(got, ip, "%s on %s: the pool's lowest free address" % (name, nodes[i % 3]))
            block_node, holder = self.block_of(ip)
            self.assertEqual(holder, nodes[i % 3])
            self.assertEqual(block_node, "node-a" if ip < "10.80.0.24" else "node-b")
        # The CNI ADD that follows is answered with the same address.
        uid = self.get(PODS + "/blue-0")["metadata"]["uid"]
        rc, out = self.add("node-c", "blue-0", uid)
        self.assertEqual(rc, 0, out)
        self.assertEqual(out["ips"][0]["address"], "10.80.0.18/24")
        # The pool is full: the next pod gets an Event saying so, and no other address.
        self.pod_with_pool("blue-full", "node-c", "blue")
        self.wait_for("an AddressExhausted Event naming the pool",
                      lambda: [e for e in self.events_of("blue-full")
                               if e.get("reason") == "AddressExhausted" and "IPPool blue" in e.get("message", "")])
        self.assertIsNone(self.allocated("blue-full"))
        # Status, from the leader: all eight in use, none available.
        self.wait_for("blue's status counts", lambda: self.pool_status("blue").get("v4UsingIPs") == 8 and
                      self.pool_status("blue").get("v4AvailableIPs") == 0)
        st = self.pool_status("blue")
        self.assertEqual(st["v4UsingIPRange"], "10.80.0.18-10.80.0.22,10.80.0.26-10.80.0.28")
        self.assertEqual(st["v4AvailableIPRange"], "")
        # One address back: the waiting pod gets it (the shard retries), and only it.
        self.req("DELETE", PODS + "/blue-3?gracePeriodSeconds=0")
        self.assertEqual(self.wait_for("blue-full allocated", lambda: self.allocated("blue-full"), seconds=60),
                         "10.80.0.21")

    def test_2_dynamic_pods_never_get_pool_addresses(self):
        # The pool holds the subnet's lowest blocks, where claims would start.
        self.create_pool("low", "pooled", ["10.80.0.2..10.80.0.15", "10.80.0.32..10.80.0.63"])
        self.wait_pool_ready("low")
        names = ["dyn-%d" % i for i in range(18)]
        for i, name in enumerate(names):
            self.req("POST", PODS, pod(name, self.NODES[i % 3], "pooled"))
        got = [self.wait_for(n + " allocated", lambda: self.allocated(n)) for n in names]
        self.assertEqual(len(set(got)), len(got), got)
        for ip in got:
            self.assertFalse(in_range(ip, "10.80.0.2", "10.80.0.15") or in_range(ip, "10.80.0.32", "10.80.0.63")
                             or in_range(ip, "10.80.0.18", "10.80.0.22") or in_range(ip, "10.80.0.26", "10.80.0.28"),
                             "dynamic pod got pool address %s (all: %s)" % (ip, got))
        # The pool still gives its lowest address.
        self.pod_with_pool("low-0", "node-b", "low")
        self.assertEqual(self.wait_for("low-0", lambda: self.allocated("low-0")), "10.80.0.2")

    def test_3_the_later_of_two_overlapping_pools_is_not_ready_and_gives_nothing(self):
        self.create_pool("late", "pooled", ["10.80.0.22..10.80.0.24"])
        cond = self.wait_for("late's Ready=False condition",
                             lambda: (self.ready_condition("late") or {}).get("status") == "False" and
                             self.ready_condition("late"))
        self.assertIn("IPPool late has conflict IPs with IPPool blue", cond["message"])
        self.assertEqual(cond["reason"], "UpdateIPAMFailed")
        self.assertEqual(self.pool_status("late").get("v4AvailableIPs"), 0)
        self.assertEqual((self.ready_condition("blue") or {}).get("status"), "True")
        self.pod_with_pool("late-0", "node-a", "late")
        self.wait_for("an Event saying pool late is not Ready",
                      lambda: [e for e in self.events_of("late-0") if "IPPool late is not Ready" in e.get("message", "")])
        self.assertIsNone(self.allocated("late-0"))

    def test_4_a_pool_of_another_subnet_or_a_missing_pool_is_an_error_then_served_once_it_exists(self):
        self.create_pool("elsewhere", "other", ["10.81.0.10..10.81.0.20"])
        self.wait_pool_ready("elsewhere")
        created = self.pod_with_pool("wrong-subnet", "node-b", "elsewhere")
        rc, out = self.add("node-b", "wrong-subnet", created["metadata"]["uid"])
        self.assertNotEqual(rc, 0)
        self.assertIn("IPPool elsewhere belongs to Subnet other", json.dumps(out))
        self.assertIsNone(self.allocated("wrong-subnet"))
        # A missing pool: an error, and the pod is served ahead of time once it appears.
        created = self.pod_with_pool("waits", "node-c", "later")
        rc, out = self.add("node-c", "waits", created["metadata"]["uid"])
        self.assertNotEqual(rc, 0)
        self.assertIn("IPPool later (ip_pool annotation) does not exist", json.dumps(out))
        self.assertIsNone(self.allocated("waits"))
        self.create_pool("later", "pooled", ["10.80.0.220..10.80.0.221"])
        self.assertEqual(self.wait_for("waits allocated once its pool exists", lambda: self.allocated("waits")),
                         "10.80.0.220")

    def test_5_ips_edited_while_in_use_and_a_deleted_pool_release_nothing(self):
        # (Pools of later tests sit high in the Subnet: test 2's dynamic pods claim blocks
        # at random among the lowest unclaimed ones, and took .100/.101 in one CI run.)
        self.create_pool("edit", "pooled", ["10.80.0.180..10.80.0.181"])
        self.wait_pool_ready("edit")
        self.pod_with_pool("e-0", "node-a", "edit")
        self.assertEqual(self.wait_for("e-0", lambda: self.allocated("e-0")), "10.80.0.180")
        obj = self.get(IPPOOLS + "/edit")
        obj["spec"]["ips"] = ["10.80.0.190..10.80.0.191"]
        self.req("PUT", IPPOOLS + "/edit", obj)
        self.wait_for("edit's status shows the new range",
                      lambda: self.pool_status("edit").get("v4AvailableIPRange") == "10.80.0.190-10.80.0.191")
        # The status counts only the pool's addresses: e-0's .100 is no longer one.
        self.assertEqual(self.pool_status("edit").get("v4UsingIPs"), 0)
        self.pod_with_pool("e-1", "node-b", "edit")
        self.assertEqual(self.wait_for("e-1", lambda: self.allocated("e-1")), "10.80.0.190")
        self.req("DELETE", IPPOOLS + "/edit")
        self.wait_for("edit gone", lambda: self.get(IPPOOLS + "/edit") is None)
        # node-c learns of the deletion through its watch, some time after it: a pod created
        # before that is served from the pool as node-c still knows it (its address is
        # still the subnet's, and unique). Once the deletion has arrived, a pod naming the
        # pool gets an Event instead. Pods until one does (bounded).
        for attempt in range(10):
            name = "e-2" if attempt == 0 else "e-2-%d" % attempt
            self.pod_with_pool(name, "node-c", "edit")
            outcome = self.wait_for("%s refused or allocated" % name, lambda: (
                [e for e in self.events_of(name) if "IPPool edit" in e.get("message", "")]
                or (["allocated"] if self.allocated(name) else None)), seconds=60)
            if outcome != ["allocated"]:
                break
            self.req("DELETE", PODS + "/" + name + "?gracePeriodSeconds=0")
        self.assertNotEqual(outcome, ["allocated"], "node-c never saw IPPool edit deleted")
        # Deleting the pool released nothing: both still hold their addresses in the blocks.
        time.sleep(1.0)  # (no event to wait for: this checks that nothing happens)
        self.assertEqual(self.block_of("10.80.0.180")[1], "node-a")
        self.assertEqual(self.block_of("10.80.0.190")[1], "node-b")

    def test_6_ip_family_narrows_a_dual_stack_pool(self):
        self.create_pool("dp", "dualp", ["10.82.0.10..10.82.0.11", "fd82::10..fd82::11"])
        self.wait_pool_ready("dp")
        self.pod_with_pool("v6-0", "node-a", "dp", DUAL, "dualp", {DUAL + ".kubernetes.io/ip_family": "ipv6"})
        self.assertEqual(self.wait_for("v6-0", lambda: self.allocated("v6-0", DUAL)), "fd82::10")
        self.pod_with_pool("both-0", "node-b", "dp", DUAL, "dualp")
        self.assertEqual(self.wait_for("both-0", lambda: self.allocated("both-0", DUAL)), "10.82.0.10,fd82::11")
        self.wait_for("dp's status per family", lambda: self.pool_status("dp").get("v6UsingIPs") == 2 and
                      self.pool_status("dp").get("v4UsingIPs") == 1 and
                      self.pool_status("dp").get("v4AvailableIPRange") == "10.82.0.11")

    def test_6b_ip_objects_mirror_allocations_and_go_with_them(self):
        ips = "/apis/kubeovn.io/v1/ips"
        self.req("POST", PODS, pod("ipobj-0", "node-a", "pooled", {P + ".kubernetes.io/ip_address": "10.80.0.150"}))
        # The provider attached twice: per-interface mode, one object per interface.
        self.req("POST", PODS, pod("ipobj-1", "node-b", "pooled@net1,pooled@net2",
                                   {P + ".kubernetes.io/ip_address.net1": "10.80.0.151"}))
        flat = self.wait_for("IP object of ipobj-0", lambda: self.get(ips + "/ipobj-0.default." + P))
        self.assertEqual(flat["spec"]["v4IpAddress"], "10.80.0.150")
        self.assertEqual(flat["spec"]["ipAddress"], "10.80.0.150")
        self.assertEqual((flat["spec"]["podName"], flat["spec"]["namespace"], flat["spec"]["subnet"],
                          flat["spec"]["nodeName"], flat["spec"]["podType"]),
                         ("ipobj-0", "default", "pooled", "node-a", ""))
        self.assertEqual(flat["metadata"]["labels"], {"ovn.kubernetes.io/subnet": "pooled", "pooled": "",
                                                      "ovn.kubernetes.io/node-name": "node-a",
                                                      "ovn.kubernetes.io/ip_reserved": "false"})
        per_if = self.wait_for("IP object of ipobj-1 (per interface)",
                               lambda: self.get(ips + "/ipobj-1.default." + P + ".net1"))
        self.assertEqual(per_if["spec"]["v4IpAddress"], "10.80.0.151")
        self.wait_for("ipobj-1's second interface", lambda: self.get(ips + "/ipobj-1.default." + P + ".net2"))
        self.req("DELETE", PODS + "/ipobj-0?gracePeriodSeconds=0")
        self.wait_for("ipobj-0's IP object deleted with its address",
                      lambda: self.get(ips + "/ipobj-0.default." + P) is None)
        # One delete for one release: one that was applied. (A try the fake answered with an
        # injected 429, or a 500 before applying it, is sent again; one answered 500 after it
        # was applied is sent again too and answered 404. Requests are logged just after
        # their answer: wait for the row.)
        def applied_deletes():
            status, log = self.api.ctl("GET", "/requests")
            deletes = [r for r in log["requests"]
                       if r["method"] == "DELETE" and r["path"] == ips + "/ipobj-0.default." + P]
            return [r for r in deletes if (not r["fault"] and r["status"] in (200, 202))
                    or r["fault"] == "timing-error_after"], deletes
        self.wait_for("the delete of ipobj-0's IP object logged", lambda: applied_deletes()[0], seconds=30)
        applied, deletes = applied_deletes()
        self.assertEqual(len(applied), 1, deletes)
        self.assertIsNotNone(self.get(ips + "/ipobj-1.default." + P + ".net1"))
        # A user's reservation of the same name (Kube-OVN's reserved IP, test_reserved.py) is
        # honoured, and never overwritten nor deleted by the pod's node.
        resv = {"apiVersion": "kubeovn.io/v1", "kind": "IP",
                "metadata": {"name": "resv-0.default." + P, "labels": {"ovn.kubernetes.io/ip_reserved": "true"}},
                "spec": {"podName": "resv-0", "namespace": "default", "subnet": "pooled", "v4IpAddress": "10.80.0.160"}}
        self.req("POST", ips, resv)
        self.req("POST", PODS, pod("resv-0", "node-c", "pooled"))
        self.wait_for("resv-0 allocated the reserved address", lambda: self.allocated("resv-0") == "10.80.0.160")
        self.req("DELETE", PODS + "/resv-0?gracePeriodSeconds=0")
        self.wait_for("resv-0 gone", lambda: self.get(PODS + "/resv-0") is None)
        self.wait_for("node-c ended resv-0's lease", lambda: subprocess.run(
            ["sqlite3", "file:%s?mode=ro" % os.path.join(self.dir, "node-c.db"),
             "select count(*) from leases where pod_name = 'resv-0' and state <> 'released'"],
            capture_output=True, text=True, timeout=30).stdout.strip() == "0")
        time.sleep(1.0)  # (nothing to wait for: this checks that nothing happens)
        status, log = self.api.ctl("GET", "/requests")
        self.assertEqual([r for r in log["requests"] if r["method"] in ("DELETE", "PUT")
                          and r["path"] == ips + "/resv-0.default." + P], [])
        kept = self.get(ips + "/resv-0.default." + P)
        self.assertIsNotNone(kept)
        self.assertEqual(kept["spec"]["v4IpAddress"], "10.80.0.160")
        self.assertEqual(kept["metadata"]["labels"]["ovn.kubernetes.io/ip_reserved"], "true")
        self.assertIn(("10.80.0.160", "default/resv-0"), [(a, who) for a, who, _ in self.block_allocs()])
        self.req("DELETE", ips + "/resv-0.default." + P)

    def test_7_an_add_naming_a_pool_the_watch_has_not_delivered_reads_it_never_goes_dynamic(self):
        # From now on the IPPool lists and watches fail: the daemons see a new pool only
        # by reading it by name.
        status, _ = self.api.ctl("POST", "/faults", [
            {"path_prefix": IPPOOLS, "query_contains": "watch=", "count": -1, "status": 500},
            {"path_prefix": IPPOOLS, "query_contains": "limit=", "count": -1, "status": 500}])
        self.assertEqual(status, 201)
        self.api.ctl("POST", "/drop-watches", {"mode": "abort"})
        self.create_pool("unseen", "pooled", ["10.80.0.200..10.80.0.201"])
        created = self.req("POST", PODS, pod("u-0", "node-b", "pooled", {P + ".kubernetes.io/ip_pool": "unseen"}))
        rc, out = self.add("node-b", "u-0", created["metadata"]["uid"])
        self.assertEqual(rc, 0, "%s\n%s" % (out, self.daemon_log("node-b")[-1500:]))
        self.assertEqual(out["ips"][0]["address"], "10.80.0.200/24")
        status, log = self.api.ctl("GET", "/requests")
        reads = [r for r in log["requests"] if r["method"] == "GET" and r["path"] == IPPOOLS + "/unseen"]
        self.assertGreaterEqual(len(reads), 1)
        # The pool cannot be read either: CNI 11 ("try again"), never a dynamic address.
        self.api.ctl("POST", "/faults", {"path_prefix": IPPOOLS + "/unseen2", "count": -1, "status": 500})
        self.create_pool("unseen2", "pooled", ["10.80.0.210"])
        created = self.req("POST", PODS, pod("u-1", "node-c", "pooled", {P + ".kubernetes.io/ip_pool": "unseen2"}))
        rc, out = self.settled(lambda: self.run_cni("node-c", "ADD", "u-1", "sb-u-1", created["metadata"]["uid"]),
                               expect="reading IPPool unseen2")
        self.assertNotEqual(rc, 0)
        self.assertEqual(out.get("code"), 11, out)
        self.assertIn("reading IPPool unseen2", json.dumps(out))
        self.api.ctl("DELETE", "/faults")
        rc, out = self.add("node-c", "u-1", created["metadata"]["uid"])
        self.assertEqual(rc, 0, out)
        self.assertEqual(out["ips"][0]["address"], "10.80.0.210/24")


if __name__ == "__main__":
    unittest.main()
