"""The RBAC manifest covers every request subleased makes, and nothing is forbidden.

Two daemons in cluster mode run against the fake API server as the service account
`system:serviceaccount:kube-system:sublease`, with the fake server in allow-list mode
holding exactly the rules of packaging/kubernetes' ClusterRole and Role (the Role's only
in its namespace). The test drives the seed's flows (a Subnet; random, static, pool and
StatefulSet pods; a CNI ADD; pod deletion and release), then reads the server's request
log: no request of the daemons got 403, and every (verb, group, resource) they used is
in the rules. Rules no request used are printed: code that will use them is in progress
(the leader: Subnet status, Lease, events, nodes), see docs/install-cluster.md.
Run: SUBLEASE_BIN=build/bin python3 -m unittest tests/packaging/test_rbac.py -v
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "fakeapi"))
from fakeapi_client import FakeApiServer  # noqa: E402

BIN = os.environ.get("SUBLEASE_BIN") or os.path.join(ROOT, "build", "bin")
SA_USER = "system:serviceaccount:kube-system:sublease"
SA_TOKEN = "sublease-sa-token"
ADMIN = "sublease-test"  # the fake server's default user: the test itself
PODS = "/api/v1/namespaces/default/pods"
P = "macvlan.default"


def rbac_rules():
    r = subprocess.run(["kubectl", "kustomize", os.path.join(ROOT, "packaging", "kubernetes")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    docs = [d for d in yaml.safe_load_all(r.stdout) if d]
    cluster = [d for d in docs if d["kind"] == "ClusterRole"][0]["rules"]
    role = [d for d in docs if d["kind"] == "Role"][0]
    return cluster, role["rules"], role["metadata"]["namespace"]


def covers(rule, verb, group, resource):
    return verb in rule["verbs"] and group in rule["apiGroups"] and resource in rule["resources"]


def pod(name, node, annotations=None, owner=None):
    meta = {"name": name, "namespace": "default",
            "annotations": dict({"k8s.v1.cni.cncf.io/networks": "macvlan"}, **(annotations or {}))}
    if owner:
        meta["ownerReferences"] = [owner]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "alpine"}]}}


class Rbac(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="sublease-rbac-")
        self.addCleanup(shutil.rmtree, self.dir, True)  # also when setUp fails below
        os.makedirs(os.path.join(self.dir, "api"))
        self.daemons = {}
        self.api = FakeApiServer("--pod-grace-scale", "0", state_dir=os.path.join(self.dir, "api"))
        self.addCleanup(self.api.cleanup)
        self.api.start()
        self.cluster_rules, self.role_rules, self.role_ns = rbac_rules()

    def stop_daemons(self):
        for node, d in list(self.daemons.items()):
            d["proc"].send_signal(signal.SIGTERM)
            try:
                d["proc"].wait(timeout=15)
            except subprocess.TimeoutExpired:
                d["proc"].kill()
                d["proc"].wait(timeout=5)
            d["log"].close()
            del self.daemons[node]

    def tearDown(self):
        self.stop_daemons()

    def log_of(self, node):
        with open(os.path.join(self.dir, node + ".log"), errors="replace") as f:
            return f.read()[-3000:]

    def req(self, method, path, body=None, ok=(200, 201)):
        status, _, obj = self.api.request(method, path, body, timeout=30)
        self.assertIn(status, ok, "%s %s -> %s %s" % (method, path, status, obj))
        return obj

    def wait_for(self, what, fn, seconds=60):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            got = fn()
            if got:
                return got
            time.sleep(0.2)
        self.fail("timed out waiting for %s\n%s" % (what, "\n".join(self.log_of(n) for n in self.daemons)))

    def allocated(self, name):
        status, _, obj = self.api.request("GET", PODS + "/" + name, timeout=30)
        ann = obj["metadata"].get("annotations", {}) if status == 200 else {}
        return ann if ann.get(P + ".kubernetes.io/allocated") == "true" else None

    def block_allocations(self):
        obj = self.req("GET", "/apis/sublease.io/v1alpha1/ipblocks")
        return sum(len(b["spec"].get("allocations") or {}) for b in obj["items"])

    def start_daemon(self, node, kubeconfig):
        sock = os.path.join(self.dir, node + ".sock")
        log = open(os.path.join(self.dir, node + ".log"), "ab")
        proc = subprocess.Popen([os.path.join(BIN, "subleased"), "--kubeconfig", kubeconfig, "--node-name", node,
                                 "--socket", sock, "--db", os.path.join(self.dir, node + ".db"),
                                 "--metrics-address", "", "--release-grace-ms", "300",
                                 "--ip-objects=true"], stdout=log, stderr=log)
        self.daemons[node] = {"proc": proc, "sock": sock, "log": log}

        def ready():
            if proc.poll() is not None:
                self.fail("subleased on %s exited: %s" % (node, self.log_of(node)))
            return subprocess.run(["curl", "-sf", "--max-time", "2", "--unix-socket", sock, "http://x/v1/cni/status"],
                                  capture_output=True).returncode == 0
        self.wait_for(node + " ready", ready, seconds=30)

    def cni_add(self, node, pod_name, container):
        conf = {"cniVersion": "1.0.0", "name": "macvlan", "type": "macvlan",
                "ipam": {"type": "kube-ovn", "server_socket": self.daemons[node]["sock"], "provider": P}}
        env = dict(os.environ, CNI_COMMAND="ADD", CNI_CONTAINERID=container, CNI_NETNS="/proc/self/ns/net",
                   CNI_IFNAME="net1", CNI_PATH=BIN,
                   CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=%s" % pod_name)
        r = subprocess.run([os.path.join(BIN, "sublease")], input=json.dumps(conf), capture_output=True,
                           text=True, env=env, timeout=30)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def check_subleasectl(self, kubeconfig):
        """subleasectl verify and leases --kubeconfig, with the daemons' own identity."""
        def ctl(*args):
            return subprocess.run([os.path.join(BIN, "subleasectl"), "--db", os.path.join(self.dir, "node-a.db")]
                                  + list(args), capture_output=True, text=True, timeout=60)
        r = ctl("verify", "--kubeconfig", kubeconfig, "--node-name", "node-a")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("clean", r.stdout)
        r = ctl("-o", "json", "leases", "--kubeconfig", kubeconfig, "--node", "node-a")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(sorted(i["pod"] for i in json.loads(r.stdout)["items"]),
                         ["default/samplepod", "default/web-0"])
        # node-a's database read as if it were node-b's: every lease differs.
        r = ctl("-o", "json", "verify", "--kubeconfig", kubeconfig, "--node-name", "node-b")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        kinds = sorted(d["kind"] for d in json.loads(r.stdout)["items"])
        self.assertEqual(kinds, ["mismatched", "mismatched", "missing", "missing"], r.stdout)

    def test_daemons_need_no_permission_outside_the_manifest(self):
        # The daemons' identity, and an allow-list of exactly the manifest's rules for it.
        status, _ = self.api.ctl("POST", "/tokens", {"token": SA_TOKEN, "user": SA_USER})
        self.assertIn(status, (200, 201))
        allow = [dict(r, users=[SA_USER]) for r in self.cluster_rules]
        allow += [dict(r, users=[SA_USER], namespaces=[self.role_ns]) for r in self.role_rules]
        allow.append({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"], "users": [ADMIN]})
        status, _ = self.api.ctl("POST", "/allow", {"rules": allow})
        self.assertIn(status, (200, 201))
        with open(self.api.info["kubeconfig"]) as f:
            kubeconfig = f.read()
        self.assertIn(self.api.info["token"], kubeconfig)
        sa_kubeconfig = os.path.join(self.dir, "sa.kubeconfig")
        with open(sa_kubeconfig, "w") as f:
            f.write(kubeconfig.replace(self.api.info["token"], SA_TOKEN))
        self.api.ctl("DELETE", "/requests")

        self.start_daemon("node-a", sa_kubeconfig)
        self.start_daemon("node-b", sa_kubeconfig)
        self.req("POST", "/apis/kubeovn.io/v1/subnets", {
            "apiVersion": "kubeovn.io/v1", "kind": "Subnet", "metadata": {"name": "macvlan"},
            "spec": {"provider": P, "cidrBlock": "172.17.0.0/24", "gateway": "172.17.0.1",
                     "excludeIps": ["172.17.0.0..172.17.0.10"]}})
        time.sleep(1.0)
        sts = {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "uid": "sts-1", "controller": True}
        self.req("POST", PODS, pod("samplepod", "node-a"))
        self.req("POST", PODS, pod("static-ip", "node-b", {P + ".kubernetes.io/ip_address": "172.17.0.100"}))
        self.req("POST", PODS, pod("pooled", "node-b", {P + ".kubernetes.io/ip_pool": "172.17.0.200,172.17.0.201"}))
        self.req("POST", PODS, pod("web-0", "node-a", {P + ".kubernetes.io/ip_pool": "172.17.0.50,172.17.0.51"}, sts))
        for name in ("samplepod", "static-ip", "pooled", "web-0"):
            self.wait_for(name + " allocated", lambda n=name: self.allocated(n))
        self.cni_add("node-a", "samplepod", "sandbox-1")
        self.check_subleasectl(sa_kubeconfig)
        # Reserved IPs: the leader fills in a user's IP object that has no address; one that
        # asks for a held address is an Event on the object; the pod reads its object.
        ips = "/apis/kubeovn.io/v1/ips"

        def reservation(name, v4=None):
            spec = {"subnet": "macvlan", "podName": name, "namespace": "default"}
            if v4:
                spec["v4IpAddress"] = v4
            return {"apiVersion": "kubeovn.io/v1", "kind": "IP", "metadata": {"name": name + ".default." + P},
                    "spec": spec}
        self.req("POST", ips, reservation("reserved"))
        self.req("POST", ips, reservation("clash", "172.17.0.100"))

        def filled():
            status, _, obj = self.api.request("GET", ips + "/reserved.default." + P, timeout=30)
            return status == 200 and obj["spec"].get("v4IpAddress")
        address = self.wait_for("the reservation filled in", filled)
        self.req("POST", PODS, pod("reserved", "node-b"))
        self.wait_for("the reserved pod allocated",
                      lambda: (self.allocated("reserved") or {}).get(P + ".kubernetes.io/ip_address") == address)

        def clash_event():
            obj = self.req("GET", "/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3Dclash.default."
                           + P)
            return obj["items"]
        self.wait_for("an Event on the clashing reservation", clash_event)
        for name in ("samplepod", "static-ip", "pooled", "web-0", "reserved"):
            self.req("DELETE", PODS + "/" + name + "?gracePeriodSeconds=0")
        for name in ("reserved", "clash"):
            self.req("DELETE", ips + "/" + name + ".default." + P)
        # (The reservation's address is freed by the garbage collection, ~30 s later.)
        self.wait_for("addresses released", lambda: self.block_allocations() == 0, seconds=120)
        # A watch is logged when it ends: end them all (the daemons watch again), then stop.
        self.api.ctl("POST", "/drop-watches", {"mode": "clean"})
        time.sleep(0.5)
        self.stop_daemons()

        def daemon_requests():
            status, log = self.api.ctl("GET", "/requests")
            self.assertEqual(status, 200)
            entries = [e for e in log["requests"] if e.get("user") == SA_USER]
            return entries if any(e["verb"] == "watch" for e in entries) else None
        mine = self.wait_for("the daemons' watches in the request log", daemon_requests, seconds=15)
        forbidden = [e for e in mine if e["status"] == 403]
        self.assertEqual(forbidden, [], "requests the manifest does not allow")
        used = sorted({(e["verb"], e["group"], e["resource"]) for e in mine})
        print("\nrequests made by the daemons (verb, group, resource):", file=sys.stderr)
        for u in used:
            print("  %s %s %s" % u, file=sys.stderr)
        for verb, group, resource in used:
            in_cluster = any(covers(r, verb, group, resource) for r in self.cluster_rules)
            in_role = any(covers(r, verb, group, resource) for r in self.role_rules)
            self.assertTrue(in_cluster or in_role, "%s %s %s not in the manifest" % (verb, group, resource))
        for e in mine:
            if any(covers(r, e["verb"], e["group"], e["resource"]) for r in self.role_rules):
                self.assertEqual(e["namespace"], self.role_ns, e)
        # The flows above must have exercised the protocol: otherwise this test proves nothing.
        for needed in [("list", "", "pods"), ("watch", "", "pods"), ("patch", "", "pods"),
                       ("list", "kubeovn.io", "subnets"), ("watch", "kubeovn.io", "subnets"),
                       ("create", "sublease.io", "ipblocks"), ("update", "sublease.io", "ipblocks"),
                       ("watch", "sublease.io", "ipblocks"), ("get", "apps", "statefulsets"),
                       ("get", "kubeovn.io", "ips"), ("list", "kubeovn.io", "ips"),
                       ("watch", "kubeovn.io", "ips"), ("patch", "kubeovn.io", "ips"),
                       ("create", "kubeovn.io", "ips"),
                       ("create", "", "events")]:
            self.assertIn(needed, used)
        unused = []
        for r in self.cluster_rules + self.role_rules:
            for verb in r["verbs"]:
                for group in r["apiGroups"]:
                    for resource in r["resources"]:
                        if (verb, group, resource) not in used:
                            unused.append("%s %s %s" % (verb, group, resource))
        print("granted but not used in this run: " + ", ".join(unused), file=sys.stderr)


if __name__ == "__main__":
    unittest.main()
