"""Cluster mode: Kube-OVN reserved IPs (issue 13, part 3), across several daemons.

A user creates an `IP` object (ips.kubeovn.io) named `<pod>.<ns>.<provider>` with
spec.subnet, spec.podName, spec.namespace and, optionally, an address. It reserves that
address (or one the leader picks and writes into the object) for that pod before the pod
exists: the leader writes an allocation carrying `reservedIp: <name>` into the IPBlocks.
The pod gets it at ADD on any node (its node reads the object by name and takes the
allocation over); neither the pod's deletion nor the garbage collection removes it;
deleting the object frees it once no pod uses it; a reservation that cannot be honoured
is an Event on the object and takes nothing.
Run: SUBLEASE_BIN=build/bin python3 -m unittest tests/cluster/test_reserved.py -v
"""
import ipaddress
import json
import os
import subprocess
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import harness  # noqa: E402
from harness import BLOCKS, PODS, SUBNETS, pod  # noqa: E402

IPS = "/apis/kubeovn.io/v1/ips"
P = "resv.default"
RESERVED = "ovn.kubernetes.io/ip_reserved"


def ip_object(pod_name, v4=None, subnet="resv", labels=None):
    spec = {"subnet": subnet, "podName": pod_name, "namespace": "default"}
    if v4:
        spec["v4IpAddress"] = v4
    meta = {"name": "%s.default.%s" % (pod_name, P)}
    if labels is not None:
        meta["labels"] = labels
    return {"apiVersion": "kubeovn.io/v1", "kind": "IP", "metadata": meta, "spec": spec}


class ReservedIps(harness.DaemonTestCase):
    NODES = ["node-a", "node-b", "node-c"]
    # IP objects on (off by default): a reserved pod's node is written into its reservation.
    DAEMON_ARGS = ["--release-grace-ms", "300", "--ip-objects=true"]
    PREFIX = "sublease-reserved-"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        status, _, obj = cls.api.request(
            "POST", SUBNETS, harness.subnet("resv", P, "10.90.0.0/24", "10.90.0.1", protocol="IPv4"), timeout=30)
        assert status == 201, obj

    # -- helpers --
    def setUp(self):
        self.wait_subnet_seen("resv")

    def name(self, pod_name):
        return "%s.default.%s" % (pod_name, P)

    def allocated(self, name):
        status, _, obj = self.api.request("GET", PODS + "/" + name, timeout=30)
        a = obj["metadata"].get("annotations", {}) if status == 200 else {}
        return a.get(P + ".kubernetes.io/ip_address") if a.get(P + ".kubernetes.io/allocated") == "true" else None

    def allocations(self):
        """{address: allocation} of Subnet resv, as the IPBlocks hold them."""
        out = {}
        for b in self.req("GET", BLOCKS + "?labelSelector=sublease.io/subnet%3Dresv")["items"]:
            net = ipaddress.ip_network(b["spec"]["cidr"])
            for off, who in (b["spec"].get("allocations") or {}).items():
                out[str(net.network_address + int(off))] = who
        return out

    def reserved_for(self, pod_name):
        """The addresses whose allocation carries the reservation of `pod_name`."""
        return sorted(a for a, who in self.allocations().items() if who.get("reservedIp") == self.name(pod_name))

    def events_of(self, name):
        obj = self.req("GET", "/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3D" + name)
        return obj["items"]

    def live_leases(self, node, pod_name):
        db = os.path.join(self.dir, node + ".db")
        out = subprocess.run(["sqlite3", "file:%s?mode=ro" % db,
                              "select count(*) from leases where pod_name = '%s' and state <> 'released'" % pod_name],
                             capture_output=True, text=True, timeout=30)
        return int(out.stdout.strip() or "0") if out.returncode == 0 else -1

    def run_cni(self, node, command, pod_name, container, uid, provider=P):
        return super().run_cni(node, command, pod_name, container, uid, provider)

    def add(self, node, name, uid, seconds=60):
        return self.add_retrying(node, name, uid, P, seconds)

    def add_until_says(self, node, name, uid, words, seconds=60):
        """CNI ADD until its "try again" answer is the one about `words` (the realistic
        timing's 500s give other "try again"s on the way); that reply (rc, body)."""
        def attempt():
            rc, out = self.run_cni(node, "ADD", name, "sb-" + name, uid)
            return (rc, out) if rc == 0 or words in json.dumps(out) else None
        return self.wait_for("an ADD of %s that says %r" % (name, words), attempt, seconds=seconds, interval=0.2)

    def delete_pod(self, name):
        self.req("DELETE", PODS + "/" + name + "?gracePeriodSeconds=0")
        self.wait_for("pod %s gone" % name, lambda: self.get(PODS + "/" + name) is None)

    def leak_and_wait_for_the_collection(self, address_offset):
        """Puts an allocation of a pod that never existed into a block of node-a and waits
        (bounded) until the leader's garbage collection has reclaimed it: proof that the
        collection swept over every allocation without a pod since before the call."""
        cidr = "10.90.0.248/29"
        name = "resv.0a5a00f8-29"
        block = {"apiVersion": "sublease.io/v1alpha1", "kind": "IPBlock",
                 "metadata": {"name": name, "labels": {"sublease.io/subnet": "resv", "sublease.io/node": "node-a"}},
                 "spec": {"subnet": "resv", "cidr": cidr, "node": "node-a", "allocations": {
                     str(address_offset): {"namespace": "default", "pod": "ghost-%d" % address_offset,
                                           "podUID": "u-ghost", "interface": "net1", "containerID": "",
                                           "node": "node-a", "provider": P, "sticky": False}}}}
        existing = self.get(BLOCKS + "/" + name)
        if existing:
            block["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
            block["spec"]["allocations"].update(existing["spec"].get("allocations") or {})
            self.req("PUT", BLOCKS + "/" + name, block)
        else:
            self.req("POST", BLOCKS, block)
        ghost = str(ipaddress.ip_address("10.90.0.248") + address_offset)
        self.wait_for("the collection reclaimed the leaked %s" % ghost,
                      lambda: ghost not in self.allocations(), seconds=120, interval=0.5)

    # -- tests --
    def test_1_a_reservation_with_an_address_is_honoured_on_any_node_and_outlives_its_pod(self):
        self.req("POST", IPS, ip_object("r1", "10.90.0.77"))  # no label: the leader adds it
        self.wait_for("r1 reserved in the IPBlocks", lambda: self.reserved_for("r1") == ["10.90.0.77"])
        self.wait_for("r1 labelled ip_reserved=true",
                      lambda: ((self.get(IPS + "/" + self.name("r1")) or {}).get("metadata", {})
                               .get("labels", {}).get(RESERVED)) == "true")
        # Before its pod exists, nobody else gets it: a static request is refused.
        created = self.req("POST", PODS, pod("other-77", "node-a", "resv", {P + ".kubernetes.io/ip_address": "10.90.0.77"}))
        rc, out = self.add("node-a", "other-77", created["metadata"]["uid"])
        self.assertNotEqual(rc, 0, out)
        self.assertIn("10.90.0.77", json.dumps(out))
        self.delete_pod("other-77")
        # The pod gets it on node-b, at ADD and ahead of time.
        created = self.req("POST", PODS, pod("r1", "node-b", "resv"))
        rc, out = self.add("node-b", "r1", created["metadata"]["uid"])
        self.assertEqual(rc, 0, "%s\n%s" % (out, self.daemon_log("node-b")[-1500:]))
        self.assertEqual(out["ips"][0]["address"], "10.90.0.77/24")
        self.wait_for("r1's annotation", lambda: self.allocated("r1") == "10.90.0.77")
        held = self.allocations()["10.90.0.77"]
        self.assertEqual((held["pod"], held["node"], held["podUID"], held.get("reservedIp")),
                         ("r1", "node-b", created["metadata"]["uid"], self.name("r1")))
        # The reservation shows where its pod runs (`kubectl get ips`: NODE), as Kube-OVN's does.
        node_of = lambda: (lambda o: (o["spec"].get("nodeName"), o["metadata"]["labels"].get(
            "ovn.kubernetes.io/node-name")))(self.get(IPS + "/" + self.name("r1")))
        self.wait_for("r1's node in its reservation", lambda: node_of() == ("node-b", "node-b"))
        self.assertEqual(self.get(IPS + "/" + self.name("r1"))["metadata"]["labels"].get(RESERVED), "true")
        # The pod goes: its node ends its lease, the reservation stays in the block.
        self.delete_pod("r1")
        self.wait_for("node-b ended r1's lease", lambda: self.live_leases("node-b", "r1") == 0)
        self.assertEqual(self.reserved_for("r1"), ["10.90.0.77"])
        kept = self.get(IPS + "/" + self.name("r1"))
        self.assertIsNotNone(kept)
        self.assertEqual(kept["spec"]["v4IpAddress"], "10.90.0.77")
        # Re-created on another node: the same address.
        created = self.req("POST", PODS, pod("r1", "node-c", "resv"))
        rc, out = self.add("node-c", "r1", created["metadata"]["uid"])
        self.assertEqual(rc, 0, out)
        self.assertEqual(out["ips"][0]["address"], "10.90.0.77/24")
        self.wait_for("the block names node-c", lambda: self.allocations()["10.90.0.77"]["node"] == "node-c")
        self.wait_for("r1's new node in its reservation", lambda: node_of() == ("node-c", "node-c"))
        self.delete_pod("r1")

    def test_1b_re_created_on_the_same_node_at_once_it_gets_the_reservation_again(self):
        # The pod's release waits for its block's next write (--deferred-write-ms); the
        # pod of the same name that comes back to the node meanwhile must not get a plain
        # dynamic address when the old lease ends under it.
        self.req("POST", IPS, ip_object("r1b", "10.90.0.78"))
        self.wait_for("r1b reserved in the IPBlocks", lambda: self.reserved_for("r1b") == ["10.90.0.78"])
        for round in range(3):
            created = self.req("POST", PODS, pod("r1b", "node-a", "resv"))
            uid = created["metadata"]["uid"]
            rc, out = self.add("node-a", "r1b", uid)
            self.assertEqual(rc, 0, "round %d: %s" % (round, out))
            self.assertEqual(out["ips"][0]["address"], "10.90.0.78/24", "round %d" % round)
            rc, out = self.run_cni("node-a", "DEL", "r1b", "sb-r1b", uid)
            self.assertEqual(rc, 0, out)
            self.delete_pod("r1b")
        created = self.req("POST", PODS, pod("r1b", "node-a", "resv"))
        rc, out = self.add("node-a", "r1b", created["metadata"]["uid"])
        self.assertEqual(rc, 0, out)
        self.assertEqual(out["ips"][0]["address"], "10.90.0.78/24")
        self.wait_for("r1b's annotation", lambda: self.allocated("r1b") == "10.90.0.78")
        self.assertEqual(self.reserved_for("r1b"), ["10.90.0.78"])
        self.delete_pod("r1b")

    def test_2_a_reservation_without_an_address_gets_one_filled_in(self):
        self.req("POST", IPS, ip_object("r2", labels={RESERVED: "true"}))
        filled = self.wait_for("r2 filled in", lambda: (self.get(IPS + "/" + self.name("r2")) or {})
                               .get("spec", {}).get("v4IpAddress"))
        obj = self.get(IPS + "/" + self.name("r2"))
        self.assertEqual(obj["spec"]["ipAddress"], filled)
        self.assertEqual(obj["metadata"]["labels"].get("ovn.kubernetes.io/subnet"), "resv")
        self.assertEqual(self.reserved_for("r2"), [filled])
        created = self.req("POST", PODS, pod("r2", "node-a", "resv"))
        rc, out = self.add("node-a", "r2", created["metadata"]["uid"])
        self.assertEqual(rc, 0, out)
        self.assertEqual(out["ips"][0]["address"], filled + "/24")
        self.assertEqual(self.reserved_for("r2"), [filled])  # one address, never a second
        self.delete_pod("r2")

    def test_2b_per_interface_a_reservation_names_its_interface(self):
        # The provider attached twice: per-interface mode, `.<iface>` ends the name.
        obj = ip_object("r2b", "10.90.0.66")
        obj["metadata"]["name"] = self.name("r2b") + ".net2"
        self.req("POST", IPS, obj)
        self.wait_for("r2b.net2 reserved", lambda: [a for a, who in self.allocations().items()
                                                    if who.get("reservedIp") == self.name("r2b") + ".net2"])
        self.req("POST", PODS, pod("r2b", "node-c", "resv@net1,resv@net2"))

        def both():
            mine = {who["interface"]: a for a, who in self.allocations().items()
                    if who["pod"] == "r2b" and who.get("node") == "node-c"}
            return mine if "net1" in mine and "net2" in mine else None
        mine = self.wait_for("both of r2b's interfaces allocated on node-c", both)
        self.assertEqual(mine["net2"], "10.90.0.66")
        self.assertNotEqual(mine["net1"], "10.90.0.66")
        self.assertEqual(self.allocations()["10.90.0.66"].get("reservedIp"), self.name("r2b") + ".net2")
        self.delete_pod("r2b")

    def test_3_the_garbage_collection_never_takes_a_reservation_whose_pod_does_not_exist(self):
        self.req("POST", IPS, ip_object("r3", "10.90.0.88"))
        self.wait_for("r3 reserved", lambda: self.reserved_for("r3") == ["10.90.0.88"])
        self.leak_and_wait_for_the_collection(1)
        self.assertEqual(self.reserved_for("r3"), ["10.90.0.88"], "the collection took a reservation")
        self.assertIsNotNone(self.get(IPS + "/" + self.name("r3")))

    def test_4_deleting_the_object_frees_the_address_once_no_pod_uses_it(self):
        self.req("POST", IPS, ip_object("r4", "10.90.0.99"))
        self.wait_for("r4 reserved", lambda: self.reserved_for("r4") == ["10.90.0.99"])
        self.req("DELETE", IPS + "/" + self.name("r4"))
        self.wait_for("10.90.0.99 free again", lambda: "10.90.0.99" not in self.allocations(), seconds=120,
                      interval=0.5)
        created = self.req("POST", PODS, pod("take-99", "node-c", "resv", {P + ".kubernetes.io/ip_address": "10.90.0.99"}))
        rc, out = self.add("node-c", "take-99", created["metadata"]["uid"])
        self.assertEqual(rc, 0, out)
        self.delete_pod("take-99")
        # In use when the object goes: the pod keeps it; it is freed once the pod is gone.
        self.req("POST", IPS, ip_object("r4b", "10.90.0.98"))
        self.wait_for("r4b reserved", lambda: self.reserved_for("r4b") == ["10.90.0.98"])
        created = self.req("POST", PODS, pod("r4b", "node-b", "resv"))
        rc, out = self.add("node-b", "r4b", created["metadata"]["uid"])
        self.assertEqual(rc, 0, out)
        self.assertEqual(out["ips"][0]["address"], "10.90.0.98/24")
        self.req("DELETE", IPS + "/" + self.name("r4b"))
        self.leak_and_wait_for_the_collection(2)
        self.assertEqual(self.allocations()["10.90.0.98"]["pod"], "r4b", "taken from a running pod")
        self.delete_pod("r4b")
        self.wait_for("10.90.0.98 free after its pod", lambda: "10.90.0.98" not in self.allocations(),
                      seconds=120, interval=0.5)

    def test_5_a_reservation_that_cannot_be_honoured_is_an_event_and_takes_nothing(self):
        created = self.req("POST", PODS, pod("holder-50", "node-a", "resv", {P + ".kubernetes.io/ip_address": "10.90.0.50"}))
        rc, out = self.add("node-a", "holder-50", created["metadata"]["uid"])
        self.assertEqual(rc, 0, out)
        cases = [("c-held", ip_object("c-held", "10.90.0.50"), "AddressConflict", "holder-50"),
                 ("c-out", ip_object("c-out", "10.91.0.5"), "InvalidRequest", "10.91.0.5"),
                 ("c-nosubnet", ip_object("c-nosubnet", "10.90.0.60", subnet="nope"), "InvalidRequest", "nope"),
                 ("c-misnamed", ip_object("c-misnamed", "10.90.0.61"), "InvalidRequest", "must be named")]
        cases[-1][1]["spec"]["podName"] = "someone-else"  # the name is c-misnamed's
        for pod_name, obj, reason, says in cases:
            self.req("POST", IPS, obj)
        for pod_name, obj, reason, says in cases:
            name = self.name(pod_name)
            events = self.wait_for("an Event on IP %s" % name, lambda: [
                e for e in self.events_of(name) if e["involvedObject"].get("kind") == "IP"])
            self.assertEqual(events[0]["reason"], reason, events)
            self.assertEqual(events[0]["type"], "Warning")
            self.assertIn(says, events[0]["message"])
            self.assertEqual(self.reserved_for(pod_name), [])
            self.assertTrue(any("reserved IP " + name in self.daemon_log(n) for n in self.daemons))
        self.assertEqual(self.allocations()["10.90.0.50"]["pod"], "holder-50")
        self.assertNotIn("10.90.0.60", self.allocations())
        self.assertNotIn("10.90.0.61", self.allocations())
        # The conflicting reservation's pod gets nothing else either.
        created = self.req("POST", PODS, pod("c-held", "node-b", "resv"))
        rc, out = self.add("node-b", "c-held", created["metadata"]["uid"])
        self.assertNotEqual(rc, 0, out)
        self.assertIn("10.90.0.50", json.dumps(out))
        self.assertEqual([a for a, who in self.allocations().items() if who["pod"] == "c-held"], [])
        for pod_name in ("c-held", "holder-50"):
            self.delete_pod(pod_name)
        for pod_name, _, _, _ in cases:
            self.req("DELETE", IPS + "/" + self.name(pod_name))

    def test_6_a_reservation_no_watch_has_delivered_is_read_never_guessed(self):
        # From now on the IP objects' lists and watches fail: no node (the leader included)
        # learns of a reservation except by reading it by name.
        status, _ = self.api.ctl("POST", "/faults", [
            {"path_prefix": IPS, "query_contains": "watch=", "count": -1, "status": 500},
            {"path_prefix": IPS, "query_contains": "limit=", "count": -1, "status": 500}])
        self.assertEqual(status, 201)
        self.api.ctl("POST", "/drop-watches", {"mode": "abort"})
        self.req("POST", IPS, ip_object("u1", "10.90.0.120"))
        created = self.req("POST", PODS, pod("u1", "node-b", "resv"))
        rc, out = self.add("node-b", "u1", created["metadata"]["uid"])
        self.assertEqual(rc, 0, "%s\n%s" % (out, self.daemon_log("node-b")[-1500:]))
        self.assertEqual(out["ips"][0]["address"], "10.90.0.120/24")
        self.assertEqual(self.reserved_for("u1"), ["10.90.0.120"])
        status, log = self.api.ctl("GET", "/requests")
        reads = [r for r in log["requests"] if r["method"] == "GET" and r["path"] == IPS + "/" + self.name("u1")]
        self.assertGreaterEqual(len(reads), 1)
        # No address yet (the leader cannot see it to fill it in): "try again", nothing dynamic.
        self.req("POST", IPS, ip_object("u2"))
        created_u2 = self.req("POST", PODS, pod("u2", "node-c", "resv"))
        rc, out = self.add_until_says("node-c", "u2", created_u2["metadata"]["uid"], "not filled it in yet")
        self.assertNotEqual(rc, 0)
        self.assertEqual(out.get("code"), 11, out)
        self.assertIn("not filled it in yet", json.dumps(out))
        # The object cannot be read: "try again", nothing dynamic.
        self.api.ctl("POST", "/faults", {"path_prefix": IPS + "/" + self.name("u3"), "count": -1, "status": 500})
        created_u3 = self.req("POST", PODS, pod("u3", "node-a", "resv"))
        rc, out = self.add_until_says("node-a", "u3", created_u3["metadata"]["uid"], "reading IP object")
        self.assertNotEqual(rc, 0)
        self.assertEqual(out.get("code"), 11, out)
        self.assertIn("reading IP object " + self.name("u3"), json.dumps(out))
        self.assertEqual([a for a, who in self.allocations().items() if who["pod"] in ("u2", "u3")], [])
        # The API heals: the leader fills u2 in, and its pod gets that address.
        self.api.ctl("DELETE", "/faults")
        rc, out = self.add("node-c", "u2", created_u2["metadata"]["uid"], seconds=120)
        self.assertEqual(rc, 0, out)
        filled = self.get(IPS + "/" + self.name("u2"))["spec"]["v4IpAddress"]
        self.assertEqual(out["ips"][0]["address"], filled + "/24")
        rc, out = self.add("node-a", "u3", created_u3["metadata"]["uid"])
        self.assertEqual(rc, 0, out)

    def test_7_a_new_leader_makes_the_reservations_the_old_one_had_not(self):
        lease = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/sublease-leader"

        def leader():
            holder = ((self.get(lease) or {}).get("spec") or {}).get("holderIdentity") or ""
            node = holder.rsplit("_", 1)[0]
            return node if node in self.daemons else None
        old = self.wait_for("a leader", leader)
        self.stop_daemon(old)  # (SIGTERM: it gives the Lease up)
        try:
            self.req("POST", IPS, ip_object("r7"))
            filled = self.wait_for("r7 filled in by the new leader", lambda: (
                self.get(IPS + "/" + self.name("r7")) or {}).get("spec", {}).get("v4IpAddress"), seconds=90)
            self.assertNotEqual(leader(), old)
            self.assertEqual(self.reserved_for("r7"), [filled])
            # The reservations made before stay as they were: one address each.
            self.assertEqual(self.reserved_for("r1"), ["10.90.0.77"])
        finally:
            self.start_daemon(old)
            self.wait_ready(old)
        self.assertEqual(self.reserved_for("r7"), [filled])


    def test_8_a_burst_of_first_allocations_reads_the_reservations_in_one_list(self):
        # A node starting with many pods: one read per attachment. Beyond a few GETs they
        # wait for one LIST of the reservations (as fresh a read), so the allocations
        # still arrive together (BENCHMARKS.md §4); each pod gets what a GET would give.
        node = "node-c"
        self.stop_daemon(node)
        metrics = "127.0.0.1:%d" % harness.free_port()  # the restarted daemon's metrics
        try:
            reserved = {"burst-r%d" % i: "10.90.0.%d" % (150 + i) for i in range(8)}
            plain = ["burst-p%d" % i for i in range(6)]
            for name, address in reserved.items():
                self.req("POST", IPS, ip_object(name, address))
            # The leader writes them into the IPBlocks first, so that the burst does not
            # depend on which node leads (it may have been node-c; another takes over).
            self.wait_for("every reservation in the IPBlocks", lambda: all(
                self.reserved_for(n) == [a] for n, a in reserved.items()), seconds=90, interval=0.5)
            status, log = self.api.ctl("GET", "/requests")
            seen = len(log["requests"])
            for name in list(reserved) + plain:
                self.req("POST", PODS, pod(name, node, "resv"))
        finally:
            self.start_daemon(node, ["--metrics-address", metrics])
            self.wait_ready(node)
        got = self.wait_for("every burst pod annotated", lambda: (lambda g: g if all(g.values()) else None)(
            {n: self.allocated(n) for n in list(reserved) + plain}), seconds=120, interval=0.5)
        for name, address in reserved.items():
            self.assertEqual(got[name], address, name)
            self.assertEqual(self.reserved_for(name), [address], name)
        for name in plain:
            self.assertNotIn(got[name], reserved.values(), name)
        status, log = self.api.ctl("GET", "/requests")
        after = log["requests"][seen:]
        lists = [r for r in after if r["method"] == "GET" and r["path"].startswith(IPS + "?")
                 and "labelSelector=" in r["path"] and "watch=" not in r["path"] and "limit=" not in r["path"]]
        self.assertGreaterEqual(len(lists), 1, "the reads that piled up went as a LIST")
        # The daemon's own count of reads by GET (the request log also has the IP object
        # writer's GETs of the reservations it must not overwrite).
        shard, _ = harness.metric_counters(metrics, "sublease_shard_total")
        self.assertGreaterEqual(shard["reservation_list"], 1, shard)
        self.assertLess(shard["reservation_read"], len(reserved) + len(plain), "not one GET per attachment")


class ReservationRetryBackoff(harness.DaemonTestCase):
    """A reservation the leader cannot make is checked again less and less often: each
    try that fails again costs an Event PATCH and a log line. It is still made once its
    cause goes (here: its Subnet is created). Base 1 s, cap 8 s (defaults 5 s and 60 s)."""
    NODES = ["node-a"]
    DAEMON_ARGS = ["--retry-interval-ms", "1000", "--max-retry-interval-ms", "8000"]
    PREFIX = "sublease-resv-backoff-"

    def test_a_refused_reservation_is_retried_with_a_growing_interval(self):
        name = "late.default." + P
        obj = ip_object("late", "10.92.0.9", subnet="later")  # Subnet "later" does not exist yet
        self.req("POST", IPS, obj)
        refused = "reserved IP %s: " % name
        self.assert_backs_off(self.log_times("node-a", refused, 4))  # 1, 2, 4 s (a 1 s timer)
        self.assertIn("(checked again in 4000 ms, or when the object changes)", self.daemon_log("node-a"))
        # The cause goes: the reservation is made on a later try, with no change to the object.
        self.req("POST", SUBNETS, harness.subnet("later", P, "10.92.0.0/24", "10.92.0.1",
                                                 protocol="IPv4"))

        def reserved():
            for b in self.req("GET", BLOCKS + "?labelSelector=sublease.io/subnet%3Dlater")["items"]:
                for who in (b["spec"].get("allocations") or {}).values():
                    if who.get("reservedIp") == name:
                        return True
            return None
        self.wait_for("the reservation made once its Subnet exists", reserved, seconds=60, interval=0.5)


if __name__ == "__main__":
    unittest.main()
