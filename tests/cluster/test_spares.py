"""Spares end to end (--spare-addresses; docs/cluster-protocol.md "Spares"): subleased
daemons against the fake API server over TLS.

  - pods are answered from the node's spares with no IPBlock write first, and every pod
    ends up recorded in its block under its own name; the blocks never show an address
    twice;
  - a subnet filled to its last address: nodes that find only other nodes' spares ask
    for them back, and every pod gets an address;
  - a node that loses its database while a spare it handed out is not recorded yet keeps
    its spares out of use after the rebuild, until the pods of then are gone — but the
    pod whose own annotations name one gets it back;
  - a node that is down when another finds only its spares: the leader takes back the
    spares none of its pods holds, and keeps the one it handed out and never recorded.
Every wait is bounded. Run: python3 -m unittest discover -s tests/cluster -p test_spares.py -v
"""
import ipaddress
import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import harness  # noqa: E402
from harness import BLOCKS, PODS, SUBNETS, pod  # noqa: E402


def subnet(*args, **kwargs):
    return harness.subnet(*args, protocol="IPv4", **kwargs)


class SparesCase(harness.DaemonTestCase):
    def allocated(self, name, provider):
        status, _, obj = self.api.request("GET", PODS + "/" + name, timeout=30)
        a = obj["metadata"].get("annotations", {}) if status == 200 else {}
        return a.get(provider + ".kubernetes.io/ip_address") if a.get(provider + ".kubernetes.io/allocated") == "true" else None

    def block_entries(self, subnet_name):
        """(address, pod or "" for a spare, node of the entry, spare) of every allocation."""
        obj = self.req("GET", BLOCKS + "?labelSelector=sublease.io/subnet%3D" + subnet_name)
        out = []
        for b in obj["items"]:
            net = ipaddress.ip_network(b["spec"]["cidr"])
            for off, who in (b["spec"].get("allocations") or {}).items():
                out.append((str(net.network_address + int(off)), who.get("pod", ""), who.get("node"),
                            bool(who.get("spare"))))
        return out

    def metric(self, address, event):
        return harness.metric_counters(address, "sublease_block_engine_total")[0].get(event, 0)


class Spares(SparesCase):
    NODES = ["node-0", "node-1"]
    DAEMON_ARGS = ["--spare-addresses", "4", "--release-grace-ms", "300"]
    PREFIX = "sublease-spares-"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.metrics = {}
        for node in cls.NODES:  # restarted with a metrics address of their own
            cls.stop_daemon(node)
            cls.metrics[node] = "127.0.0.1:%d" % harness.free_port()
            cls.start_daemon(node, ["--metrics-address", cls.metrics[node]])
        for node in cls.NODES:
            cls.wait_ready(node)

    def test_1_pods_are_answered_from_spares_and_recorded_under_their_names(self):
        p = "sp.default"
        self.req("POST", SUBNETS, subnet("sp", p, "10.97.0.0/24"))
        self.wait_subnet_seen("sp")
        # The first pod of each node claims its block; that create adds 4 spares.
        for node in self.NODES:
            self.req("POST", PODS, pod("first-" + node, node, "sp"))
        for node in self.NODES:
            self.wait_for("first-%s allocated" % node, lambda: self.allocated("first-" + node, p), seconds=60)
        self.wait_for("4 spares per node", lambda: sorted(
            n for _, _, n, spare in self.block_entries("sp") if spare) == ["node-0"] * 4 + ["node-1"] * 4,
            seconds=60)
        writes = {n: self.metric(self.metrics[n], "update") + self.metric(self.metrics[n], "create")
                  for n in self.NODES}
        names = ["s-%d" % i for i in range(12)]
        uids = {}
        for i, name in enumerate(names):
            uids[name] = self.req("POST", PODS, pod(name, self.NODES[i % 2], "sp"))["metadata"]["uid"]
        for i, name in enumerate(names):
            rc, out = self.add_retrying(self.NODES[i % 2], name, uids[name], p)
            self.assertEqual(rc, 0, out)
            self.assertEqual(out["ips"][0]["address"].split("/")[0],
                             self.wait_for(name + " annotated", lambda: self.allocated(name, p), seconds=60))
        taken = sum(self.metric(self.metrics[n], "spare_taken") for n in self.NODES)
        self.assertGreaterEqual(taken, 6, "most of the 12 were answered from spares")

        def recorded():
            entries = self.block_entries("sp")
            pods = {who: ip for ip, who, _, spare in entries if not spare}
            return pods if all(n in pods for n in names) else None
        pods = self.wait_for("every pod recorded in its block", recorded, seconds=60)
        entries = self.block_entries("sp")
        self.assertEqual(len({ip for ip, _, _, _ in entries}), len(entries), "no address twice in the blocks")
        for name in names:
            self.assertEqual(pods[name], self.allocated(name, p))
        after = {n: self.metric(self.metrics[n], "update") + self.metric(self.metrics[n], "create")
                 for n in self.NODES}
        per_pod = sum(after[n] - writes[n] for n in self.NODES) / len(names)
        print("\nspares: %d of %d pods answered from a spare, %.2f IPBlock writes per pod"
              % (taken, len(names), per_pod), file=sys.stderr)
        self.assertLess(per_pod, 1.0, "fewer block writes than pods")

    def test_2_a_full_subnet_gives_its_spares_back_and_every_pod_gets_an_address(self):
        p = "full.default"
        # 10.97.1.0/27 with /29 blocks: 29 usable addresses (gateway .1, broadcast .31 out).
        s = subnet("full", p, "10.97.1.0/27")
        s["metadata"]["annotations"] = {"sublease.io/block-size": "/29"}
        self.req("POST", SUBNETS, s)
        self.wait_subnet_seen("full")
        # node-0 allocates once (its block then holds 4 spares), and every other pod is
        # node-1's: the last ones can only be node-0's spares, which node-1 must ask for.
        names = ["f-%02d" % i for i in range(29)]
        self.req("POST", PODS, pod(names[0], "node-0", "full"))
        self.wait_for(names[0] + " allocated", lambda: self.allocated(names[0], p), seconds=60)
        self.wait_for("node-0's 4 spares", lambda: sum(
            1 for _, _, n, spare in self.block_entries("full") if spare and n == "node-0") == 4, seconds=60)
        for name in names[1:]:
            self.req("POST", PODS, pod(name, "node-1", "full"))

        def all_allocated():
            got = {n: self.allocated(n, p) for n in names}
            return got if all(got.values()) else None
        got = self.wait_for("all 29 pods allocated (the spares given back)", all_allocated, seconds=180,
                            interval=0.5)
        self.assertEqual(len(set(got.values())), 29, "29 distinct addresses")

        def settled():
            entries = self.block_entries("full")
            return entries if len(entries) == 29 and not any(spare for *_, spare in entries) else None
        entries = self.wait_for("every address recorded for its pod", settled, seconds=60)
        self.assertEqual({ip: who for ip, who, _, _ in entries}, {ip: n for n, ip in got.items()})
        returned = self.metric(self.metrics["node-0"], "spare_returned")
        self.assertGreater(returned, 0, "node-1 found only node-0's spares and asked for them")


class LostDatabase(SparesCase):
    """A spare handed out and not recorded yet (records wait 60 s here), then kill -9 and
    the database deleted: the rebuilt node keeps its spares out of use until the pods that
    were on it are gone, but gives the pod it had handed one to (its annotations say so)
    that one back."""
    NODES = ["node-0"]
    DAEMON_ARGS = ["--spare-addresses", "4", "--deferred-write-ms", "60000", "--release-grace-ms", "300"]
    PREFIX = "sublease-spares-db-"

    def test_the_spares_of_a_rebuilt_node_stay_out_of_use_until_its_pods_are_gone(self):
        p = "lost.default"
        self.req("POST", SUBNETS, subnet("lost", p, "10.97.2.0/24"))
        self.wait_subnet_seen("lost")
        self.req("POST", PODS, pod("l-first", "node-0", "lost"))
        self.wait_for("l-first allocated", lambda: self.allocated("l-first", p), seconds=60)
        self.wait_for("4 spares", lambda: sum(1 for *_, spare in self.block_entries("lost") if spare) == 4,
                      seconds=60)
        self.req("POST", PODS, pod("l-0", "node-0", "lost"))
        held = self.wait_for("l-0 allocated from a spare", lambda: self.allocated("l-0", p), seconds=60)
        entry = [e for e in self.block_entries("lost") if e[0] == held]
        self.assertEqual(entry, [(held, "", "node-0", True)], "not recorded yet: still a spare in the block")
        # What the rebuild will quarantine: the node's spares now. (Once restarted, the
        # node adds new spares beside them with its first write; those are usable.)
        quarantined = {ip for ip, _, _, spare in self.block_entries("lost") if spare}
        self.assertEqual(len(quarantined), 4)

        self.kill_daemon("node-0")
        for suffix in ("", "-wal", "-shm"):
            try:
                os.remove(os.path.join(self.dir, "node-0.db" + suffix))
            except FileNotFoundError:
                pass
        self.start_daemon("node-0")
        self.wait_ready("node-0", seconds=90)
        self.wait_for("the rebuild quarantined the spares",
                      lambda: "spare address(es) of this node are kept out of use" in self.daemon_log("node-0"),
                      seconds=30)
        self.assertIn(held, quarantined)
        # l-0's own annotations (allocated: "true", written after its answer) name its
        # spare: it gets it back, recorded under its name.
        self.wait_for("l-0 recorded with its address again",
                      lambda: (held, "l-0", "node-0", False) in self.block_entries("lost"), seconds=60)
        # New pods never get l-0's address (nor any quarantined spare).
        fresh = ["l-new-%d" % i for i in range(6)]
        for name in fresh:
            self.req("POST", PODS, pod(name, "node-0", "lost"))
        for name in fresh:
            got = self.wait_for(name + " allocated", lambda: self.allocated(name, p), seconds=60)
            self.assertNotIn(got, quarantined, "a quarantined spare was handed out")
        still = {ip for ip, _, _, spare in self.block_entries("lost") if spare}
        self.assertLessEqual(quarantined - {held}, still, "quarantined spares stay in place, not given back")
        # Once the pods of then are gone the quarantine ends.
        for name in ["l-first", "l-0"]:
            self.req("DELETE", PODS + "/" + name + "?gracePeriodSeconds=0")
        self.wait_for("the quarantine lifted",
                      lambda: "quarantined spare(s) are usable again" in self.daemon_log("node-0"), seconds=60)
        entries = self.block_entries("lost")
        self.assertEqual(len({ip for ip, *_ in entries}), len(entries), "no address twice in the blocks")


class DownNode(SparesCase):
    """node-0 hands out a spare it does not record (records wait 60 s there) and is
    killed; node-1 then needs every address of a small subnet. node-0 cannot answer the
    ask for its spares: the leader takes back those none of node-0's pods holds, after
    the ask has gone unanswered for the collection's interval (20 s)."""
    NODES = ["node-0", "node-1"]
    CREATE_NODES = True
    DAEMON_ARGS = ["--spare-addresses", "4", "--release-grace-ms", "300", "--max-retry-interval-ms", "5000"]
    PREFIX = "sublease-spares-down-"

    def test_a_down_nodes_spares_come_back_but_not_the_one_a_pod_of_it_holds(self):
        self.stop_daemon("node-0")
        self.start_daemon("node-0", ["--deferred-write-ms", "60000"])
        self.wait_ready("node-0")
        p = "down.default"
        s = subnet("down", p, "10.97.3.0/27")  # 29 usable addresses in /29 blocks
        s["metadata"]["annotations"] = {"sublease.io/block-size": "/29"}
        self.req("POST", SUBNETS, s)
        self.wait_subnet_seen("down")
        self.req("POST", PODS, pod("d-first", "node-0", "down"))
        self.wait_for("d-first allocated", lambda: self.allocated("d-first", p), seconds=60)
        self.wait_for("node-0's 4 spares", lambda: sum(
            1 for _, _, n, spare in self.block_entries("down") if spare and n == "node-0") == 4, seconds=60)
        self.req("POST", PODS, pod("d-handed", "node-0", "down"))
        handed = self.wait_for("d-handed allocated", lambda: self.allocated("d-handed", p), seconds=60)
        self.assertIn((handed, "", "node-0", True), self.block_entries("down"), "handed out, not recorded")
        self.kill_daemon("node-0")

        names = ["d-%02d" % i for i in range(27)]  # every address left: node-0's 3 untaken spares too
        for name in names:
            self.req("POST", PODS, pod(name, "node-1", "down"))

        def all_allocated():
            got = {n: self.allocated(n, p) for n in names}
            return got if all(got.values()) else None
        got = self.wait_for("all 27 pods of node-1 allocated", all_allocated, seconds=240, interval=1)
        self.assertEqual(len(set(got.values())), 27, "27 distinct addresses")
        self.assertNotIn(handed, got.values(), "the spare node-0 handed out was given to another pod")
        entries = self.block_entries("down")
        self.assertEqual(len({ip for ip, *_ in entries}), len(entries), "no address twice in the blocks")
        self.assertIn((handed, "", "node-0", True), entries, "the spare d-handed holds stays node-0's")
        logs = ""
        for node in self.NODES:
            with open(os.path.join(self.dir, node + ".log"), errors="replace") as f:
                logs += f.read()
        self.assertIn("took back 3 spare(s) of node node-0", logs)


if __name__ == "__main__":
    unittest.main()
