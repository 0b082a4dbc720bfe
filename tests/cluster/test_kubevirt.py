"""Cluster mode: KubeVirt VMs keep their attachment addresses through IPAMClaims (issue 12).

Three daemons (node-a, node-b, node-c) against the fake API server, which serves the
IPAMClaim CRD from packaging/kubernetes/optional/crd-ipamclaim.yaml and minimal KubeVirt
VirtualMachine / VirtualMachineInstance CRDs. Launcher pods are made as KubeVirt makes
them (owner reference kind VirtualMachineInstance; the migration target carries
`kubevirt.io/migrationJobName`), and the CNI plugin is run as Multus runs it, with the
NAD's config (`name`, `allowPersistentIPs: true`) on stdin. Checked:
- the first pod of a claim records its address in the claim's status (ips, ownerPod,
  condition IPsAllocated/SuccessfulAllocation), and the IPBlock allocation names the claim;
- a restart (new launcher pod, on another node) gets exactly the claim's address;
- a live migration: the target on another node gets it while the source holds it, the
  IPBlocks keep ONE allocation for it, and when either pod goes it stays with the claim;
- a missing claim, or one of another network, is an error (nothing allocated);
- exhaustion sets SubnetExhausted, a second VM asking for a taken static address
  IPAddressConflict (status.ips [] in both);
- kill -9 of a daemon with its database lost keeps every claim's address;
- deleting the claim releases the address within 60 s;
- without a claim (Kube-OVN's rules, --keep-vm-ip): a launcher pod's address is kept per
  (VM, interface) across pods and nodes, annotated `<provider>.kubernetes.io/virtualmachine`,
  and freed once the VM and its VMI are gone; `--keep-vm-ip false` turns that off.
"""
import ipaddress
import json
import os
import subprocess
import sys
import time
import unittest

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import harness  # noqa: E402
from harness import BIN, BLOCKS, PODS  # noqa: E402

ROOT = os.path.join(HERE, "..", "..")
P = "tenant.default"
SMALL = "small.default"
CLAIMS = "/apis/k8s.cni.cncf.io/v1alpha1/namespaces/default/ipamclaims"
VMS = "/apis/kubevirt.io/v1/namespaces/default/virtualmachines"
VMIS = "/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstances"


def claim(name, network="tenant"):
    return {"apiVersion": "k8s.cni.cncf.io/v1alpha1", "kind": "IPAMClaim",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"network": network, "interface": ""}}


def run_cni(sock, command, pod_name, container, uid, provider=P, network="tenant", persistent=True,
            ifname="net1"):
    """Runs the plugin as Multus would, with the NAD's config on stdin; (rc, output)."""
    conf = {"cniVersion": "1.0.0", "name": network, "type": "macvlan",
            "ipam": {"type": "kube-ovn", "server_socket": sock, "provider": provider}}
    if persistent:
        conf["allowPersistentIPs"] = True
    args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=%s" % pod_name
    if uid:
        args += ";K8S_POD_UID=%s" % uid
    env = dict(os.environ, CNI_COMMAND=command, CNI_CONTAINERID=container, CNI_NETNS="/proc/self/ns/net",
               CNI_IFNAME=ifname, CNI_PATH=BIN, CNI_ARGS=args)
    r = subprocess.run([os.path.join(BIN, "sublease")], input=json.dumps(conf), capture_output=True,
                       text=True, env=env, timeout=60)
    return r.returncode, json.loads(r.stdout) if r.stdout.strip() else {}


class KubeVirtClaims(harness.DaemonTestCase):
    NODES = ["node-a", "node-b", "node-c"]
    DAEMON_ARGS = ["--release-grace-ms", "300"]
    PREFIX = "sublease-kubevirt-"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        api = cls.api
        with open(os.path.join(ROOT, "packaging", "kubernetes", "optional", "crd-ipamclaim.yaml")) as f:
            crd = yaml.safe_load(f)
        status, _, obj = api.request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                                     crd, timeout=30)
        assert status == 201, obj
        for kind, plural in [("VirtualMachine", "virtualmachines"),
                             ("VirtualMachineInstance", "virtualmachineinstances")]:
            status, _ = api.ctl("POST", "/crds", {"group": "kubevirt.io", "version": "v1", "plural": plural,
                                                  "kind": kind, "scope": "Namespaced", "status": True})
            assert status == 201, (kind, status)
        for name, provider, cidr, gw in [("tenant", P, "172.19.0.0/16", "172.19.0.1"),
                                         ("small", SMALL, "10.80.0.0/29", "10.80.0.1")]:
            status, _, obj = api.request("POST", "/apis/kubeovn.io/v1/subnets",
                                         harness.subnet(name, provider, cidr, gw, protocol="IPv4"), timeout=30)
            assert status == 201, obj
        deadline = time.monotonic() + 60
        for node in cls.NODES:
            while not cls.serves(node, P) or not cls.serves(node, SMALL):
                if time.monotonic() > deadline:
                    raise RuntimeError("the Subnets never reached " + node + ": " + cls.daemon_log(node))
                time.sleep(0.1)

    # -- helpers --
    @classmethod
    def serves(cls, node, provider):
        rc, out = cls.run_cni(node, "CHECK", "nobody", "probe", "", provider=provider)
        return "no Subnet has spec.provider" not in json.dumps(out)

    @classmethod
    def run_cni(cls, node, command, pod_name, container, uid, **kw):
        return run_cni(cls.daemons[node]["sock"], command, pod_name, container, uid, **kw)

    def launcher(self, vm, node, claim_name, suffix, network="tenant", migration=None, annotations=None):
        """A virt-launcher pod of VMI `vm` on `node`, its networks element referencing the claim."""
        element = {"name": network, "interface": "net1"}
        if claim_name:
            element["ipam-claim-reference"] = claim_name
        ann = dict(annotations or {})
        ann["kubevirt.io/domain"] = vm
        if migration:
            ann["kubevirt.io/migrationJobName"] = migration
        owner = {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "name": vm,
                 "uid": "vmi-uid-" + vm, "controller": True}
        obj = harness.pod("virt-launcher-%s-%s" % (vm, suffix), node, json.dumps([element]), ann, owner)
        created = self.req("POST", PODS, obj)
        return created["metadata"]["name"], created["metadata"]["uid"]

    def add(self, node, pod_name, uid, **kw):
        rc, out = self.run_cni(node, "ADD", pod_name, "c-" + pod_name, uid, **kw)
        return rc, out

    def add_ok(self, node, pod_name, uid, **kw):
        rc, out = self.add(node, pod_name, uid, **kw)
        self.assertEqual(rc, 0, out)
        return out["ips"][0]["address"]

    def delete_pod(self, node, pod_name, uid):
        rc, out = self.run_cni(node, "DEL", pod_name, "c-" + pod_name, uid)
        self.assertEqual(rc, 0, out)
        self.req("DELETE", PODS + "/" + pod_name, ok=(200, 202, 404))

    def claim_obj(self, name):
        return self.get(CLAIMS + "/" + name)

    def allocations(self, address):
        """Every IPBlock allocation of `address` (bare) across the cluster."""
        ip = ipaddress.ip_address(address)
        found = []
        for blk in self.get(BLOCKS)["items"]:
            net = ipaddress.ip_network(blk["spec"]["cidr"])
            for off, a in (blk["spec"].get("allocations") or {}).items():
                if net.network_address + int(off) == ip:
                    found.append(dict(a, block=blk["metadata"]["name"]))
        return found

    # -- tests --
    def test_1_first_pod_records_the_claim_and_a_restart_on_another_node_keeps_it(self):
        self.req("POST", CLAIMS, claim("vm-a.tenant"))
        name, uid = self.launcher("vm-a", "node-a", "vm-a.tenant", "aaaa1")
        address = self.add_ok("node-a", name, uid)
        self.assertTrue(address.startswith("172.19."), address)
        c = self.claim_obj("vm-a.tenant")
        self.assertEqual(c["status"]["ips"], [address], c)
        self.assertEqual(c["status"]["ownerPod"]["name"], name)
        cond = [x for x in c["status"]["conditions"] if x["type"] == "IPsAllocated"]
        self.assertEqual([(x["status"], x["reason"]) for x in cond], [("True", "SuccessfulAllocation")])
        bare = address.split("/")[0]
        allocs = self.allocations(bare)
        self.assertEqual(len(allocs), 1, allocs)
        self.assertEqual(allocs[0]["ipamClaim"], "default/vm-a.tenant")

        # The VM restarts: its pod goes (DEL, delete), a new launcher pod starts on node-b.
        self.delete_pod("node-a", name, uid)
        time.sleep(1)  # past the release grace: a release would have happened by now
        self.assertEqual(len(self.allocations(bare)), 1, "the claim's address was released with its pod")
        name2, uid2 = self.launcher("vm-a", "node-b", "vm-a.tenant", "bbbb2")
        self.assertEqual(self.add_ok("node-b", name2, uid2), address)
        allocs = self.allocations(bare)
        self.assertEqual(len(allocs), 1, allocs)
        self.assertEqual((allocs[0]["pod"], allocs[0]["node"], allocs[0]["ipamClaim"]),
                         (name2, "node-b", "default/vm-a.tenant"))
        # And back on node-a (the node that made the allocation).
        self.delete_pod("node-b", name2, uid2)
        name3, uid3 = self.launcher("vm-a", "node-a", "vm-a.tenant", "cccc3")
        self.assertEqual(self.add_ok("node-a", name3, uid3), address)
        self.assertEqual(len(self.allocations(bare)), 1)

    def test_2_live_migration_shares_the_address_across_two_nodes(self):
        self.req("POST", CLAIMS, claim("vm-m.tenant"))
        src, src_uid = self.launcher("vm-m", "node-a", "vm-m.tenant", "src01")
        address = self.add_ok("node-a", src, src_uid)
        bare = address.split("/")[0]
        # The target, on node-b, while the source still runs.
        tgt, tgt_uid = self.launcher("vm-m", "node-b", "vm-m.tenant", "tgt01", migration="migration-1")
        self.assertEqual(self.add_ok("node-b", tgt, tgt_uid), address)
        allocs = self.allocations(bare)
        self.assertEqual(len(allocs), 1, "one allocation for the VM, not one per pod: %r" % allocs)
        self.assertEqual(allocs[0]["ipamClaim"], "default/vm-m.tenant")
        # Nowhere else does the VM hold a second address.
        others = [a for blk in self.get(BLOCKS)["items"]
                  for a in (blk["spec"].get("allocations") or {}).values()
                  if a.get("ipamClaim") == "default/vm-m.tenant"]
        self.assertEqual(len(others), 1, others)
        # A repeated ADD of the source (its node answers from its own state) still works.
        self.assertEqual(self.add_ok("node-a", src, src_uid), address)
        # The migration completes: the source pod goes; the address stays with the VM.
        self.delete_pod("node-a", src, src_uid)
        time.sleep(1)
        self.assertEqual(len(self.allocations(bare)), 1)
        # The target goes too (VM stopped): still the VM's.
        self.delete_pod("node-b", tgt, tgt_uid)
        time.sleep(1)
        self.assertEqual(len(self.allocations(bare)), 1, "the address left the VM when its pods went")
        # Another pod asking for that address statically is refused: it is the VM's.
        other = harness.pod("intruder", "node-c", "tenant",
                            {"tenant.default.kubernetes.io/ip_address": bare})
        created = self.req("POST", PODS, other)
        rc, out = self.add("node-c", "intruder", created["metadata"]["uid"], persistent=False)
        self.assertNotEqual(rc, 0, out)
        # The VM starts again on node-c: the same address.
        again, again_uid = self.launcher("vm-m", "node-c", "vm-m.tenant", "again")
        self.assertEqual(self.add_ok("node-c", again, again_uid), address)

    def test_3_missing_claim_or_other_network_is_an_error(self):
        name, uid = self.launcher("vm-x", "node-a", "vm-x.nosuch", "x1")
        rc, out = self.add("node-a", name, uid)
        self.assertNotEqual(rc, 0, out)
        self.assertIn("does not exist", out.get("msg", "") + out.get("details", ""), out)
        self.req("POST", CLAIMS, claim("vm-y.other", network="othernet"))
        name, uid = self.launcher("vm-y", "node-a", "vm-y.other", "y1")
        rc, out = self.add("node-a", name, uid)
        self.assertNotEqual(rc, 0, out)
        self.assertIn("othernet", out.get("msg", "") + out.get("details", ""), out)
        self.assertEqual(self.claim_obj("vm-y.other").get("status", {}).get("ips", []), [])
        # Without allowPersistentIPs in the network config the reference is ignored.
        rc, out = self.add("node-a", name, uid, persistent=False)
        self.assertEqual(rc, 0, out)
        self.assertEqual(self.claim_obj("vm-y.other").get("status", {}).get("ips", []), [])

    def test_4_exhaustion_and_conflict_set_the_condition(self):
        # 10.80.0.0/29: usable .2-.6 (gateway .1). A static address for one VM...
        self.req("POST", CLAIMS, claim("vm-s1.small", network="small"))
        s1, s1_uid = self.launcher("vm-s1", "node-a", "vm-s1.small", "s1", network="small",
                                   annotations={"small.default.kubernetes.io/ip_address": "10.80.0.5"})
        self.assertEqual(self.add_ok("node-a", s1, s1_uid, provider=SMALL, network="small"), "10.80.0.5/29")
        # ...and a second VM asking for the same: IPAddressConflict.
        self.req("POST", CLAIMS, claim("vm-s2.small", network="small"))
        s2, s2_uid = self.launcher("vm-s2", "node-b", "vm-s2.small", "s2", network="small",
                                   annotations={"small.default.kubernetes.io/ip_address": "10.80.0.5"})
        rc, out = self.add("node-b", s2, s2_uid, provider=SMALL, network="small")
        self.assertNotEqual(rc, 0, out)
        st = self.claim_obj("vm-s2.small")["status"]
        self.assertEqual(st["ips"], [])
        self.assertEqual([(c["status"], c["reason"]) for c in st["conditions"]], [("False", "IPAddressConflict")])
        # Fill the rest, then one more VM: SubnetExhausted.
        for i in range(4):
            p, u = self.launcher("filler%d" % i, "node-a", None, "f", network="small")
            self.add_ok("node-a", p, u, provider=SMALL, network="small")
        self.req("POST", CLAIMS, claim("vm-s3.small", network="small"))
        s3, s3_uid = self.launcher("vm-s3", "node-c", "vm-s3.small", "s3", network="small")
        rc, out = self.add("node-c", s3, s3_uid, provider=SMALL, network="small")
        self.assertNotEqual(rc, 0, out)
        st = self.claim_obj("vm-s3.small")["status"]
        self.assertEqual(st["ips"], [])
        self.assertEqual([(c["status"], c["reason"]) for c in st["conditions"]], [("False", "SubnetExhausted")])

    def test_5_kill_9_and_a_lost_database_keep_every_claims_address(self):
        self.req("POST", CLAIMS, claim("vm-k.tenant"))
        name, uid = self.launcher("vm-k", "node-a", "vm-k.tenant", "k1")
        address = self.add_ok("node-a", name, uid)
        bare = address.split("/")[0]
        self.delete_pod("node-a", name, uid)  # the VM is stopped: only the claim holds it
        self.kill_daemon("node-a")
        for suffix in ("", "-wal", "-shm"):
            try:
                os.remove(os.path.join(self.dir, "node-a.db" + suffix))
            except FileNotFoundError:
                pass
        self.start_daemon("node-a")
        self.wait_ready("node-a")
        time.sleep(1)
        allocs = self.allocations(bare)
        self.assertEqual([a["ipamClaim"] for a in allocs], ["default/vm-k.tenant"])
        # node-a's next pods do not get it; the VM's next pod does.
        p, u = self.launcher("plain", "node-a", None, "p1")
        self.assertNotEqual(self.add_ok("node-a", p, u, persistent=False), address)
        name2, uid2 = self.launcher("vm-k", "node-a", "vm-k.tenant", "k2")
        self.assertEqual(self.add_ok("node-a", name2, uid2), address)
        self.assertEqual(len(self.allocations(bare)), 1)

    def test_6_deleting_the_claim_releases_the_address_within_60_s(self):
        self.req("POST", CLAIMS, claim("vm-d.tenant"))
        name, uid = self.launcher("vm-d", "node-b", "vm-d.tenant", "d1")
        address = self.add_ok("node-b", name, uid)
        bare = address.split("/")[0]
        self.delete_pod("node-b", name, uid)
        time.sleep(1)
        self.assertEqual(len(self.allocations(bare)), 1)
        start = time.monotonic()
        self.req("DELETE", CLAIMS + "/vm-d.tenant", ok=(200, 202))
        self.wait_for("the claim's address to be released", lambda: not self.allocations(bare), seconds=60,
                      interval=0.5)
        print("\nclaim's address %s released %.1f s after the claim was deleted" % (
            bare, time.monotonic() - start))

    def test_7_without_a_claim_the_vm_keeps_its_address_until_vm_and_vmi_are_gone(self):
        # Kube-OVN's rules (keep-vm-ip): no claim, the address is kept per (VM, interface).
        self.req("POST", VMS, {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
                               "metadata": {"name": "vm-n", "namespace": "default"}, "spec": {}})
        self.req("POST", VMIS, {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
                                "metadata": {"name": "vm-n", "namespace": "default"}, "spec": {}})
        name, uid = self.launcher("vm-n", "node-a", None, "nn1")
        address = self.add_ok("node-a", name, uid, persistent=False)
        bare = address.split("/")[0]
        self.assertEqual([a.get("virtualMachine") for a in self.allocations(bare)], ["default/vm-n"])
        self.wait_for("the virtualmachine annotation", lambda: (self.get(PODS + "/" + name) or {}).get(
            "metadata", {}).get("annotations", {}).get("tenant.default.kubernetes.io/virtualmachine") == "vm-n",
            seconds=30)
        # The VM restarts on another node: its address follows it, one allocation.
        self.delete_pod("node-a", name, uid)
        name2, uid2 = self.launcher("vm-n", "node-b", None, "nn2")
        self.assertEqual(self.add_ok("node-b", name2, uid2, persistent=False), address)
        allocs = self.allocations(bare)
        self.assertEqual([(a["pod"], a["node"]) for a in allocs], [(name2, "node-b")])
        # A pod of another VM does not get it.
        o, ouid = self.launcher("vm-other", "node-a", None, "oo1")
        self.assertNotEqual(self.add_ok("node-a", o, ouid, persistent=False), address)
        # The VM is deleted (pod, VMI, VM): the address is freed within 60 s.
        self.delete_pod("node-b", name2, uid2)
        time.sleep(1)
        self.assertEqual(len(self.allocations(bare)), 1, "freed while the VM still exists")
        start = time.monotonic()
        self.req("DELETE", VMIS + "/vm-n", ok=(200, 202))
        self.req("DELETE", VMS + "/vm-n", ok=(200, 202))
        self.wait_for("the VM's address to be released", lambda: not self.allocations(bare), seconds=60,
                      interval=0.5)
        print("\nVM's address %s released %.1f s after the VM was deleted" % (bare, time.monotonic() - start))


class KubeVirtWithoutKeepVmIp(harness.DaemonTestCase):
    """The switch: --keep-vm-ip=false makes a launcher pod an ordinary pod."""
    NODES = ["node-a"]
    DAEMON_ARGS = ["--release-grace-ms", "300", "--keep-vm-ip", "false"]
    PREFIX = "sublease-kubevirt-off-"

    def test_launcher_pod_allocation_is_not_kept_for_the_vm(self):
        status, _, obj = self.api.request("POST", "/apis/kubeovn.io/v1/subnets",
                                          harness.subnet("tenant", P, "172.19.0.0/16", "172.19.0.1",
                                                         protocol="IPv4"), timeout=30)
        self.assertEqual(status, 201, obj)
        owner = {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "name": "vm-o",
                 "uid": "vmi-uid-o", "controller": True}
        created = self.req("POST", PODS, harness.pod("virt-launcher-vm-o-1", "node-a",
                                                     json.dumps([{"name": "tenant", "interface": "net1"}]),
                                                     None, owner))
        sock = self.daemons["node-a"]["sock"]
        self.wait_for("the Subnet", lambda: "no Subnet has spec.provider" not in json.dumps(
            run_cni(sock, "CHECK", "nobody", "probe", "")[1]), seconds=30)
        rc, out = run_cni(sock, "ADD", "virt-launcher-vm-o-1", "c1", created["metadata"]["uid"],
                          persistent=False)
        self.assertEqual(rc, 0, out)
        bare = out["ips"][0]["address"].split("/")[0]
        blocks = self.get(BLOCKS)["items"]
        allocs = [a for b in blocks for a in (b["spec"].get("allocations") or {}).values()
                  if not a.get("spare")]  # (the node's spares are nobody's)
        self.assertEqual(len(allocs), 1, allocs)
        self.assertNotIn("virtualMachine", allocs[0])
        self.assertTrue(bare.startswith("172.19."))


if __name__ == "__main__":
    unittest.main()
