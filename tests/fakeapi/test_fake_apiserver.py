"""Tests of the fake API server against the recordings of a real kube-apiserver v1.26.

Run: python3 -m unittest discover -s tests/fakeapi -v
Every test is bounded: socket timeouts on every read, bounded loops, servers stopped by SIGTERM.
"""

import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.parse

from fakeapi_client import FakeApiServer, load_reference, normalise
import openapi_v2

SRV = None


def setUpModule():
    global SRV
    SRV = FakeApiServer("--bookmark-interval", "0.3").start()
    code, _ = SRV.ctl("POST", "/crds", {
        "group": "reference.test", "version": "v1", "plural": "examples", "kind": "Example",
        "scope": "Cluster",
        "printerColumns": [{"name": "Node", "type": "string", "jsonPath": ".spec.node"}]})
    assert code == 201, code


def tearDownModule():
    rc = SRV.stop()
    log = SRV.log()
    SRV.cleanup()
    assert rc == 0, "fake apiserver exit code %r: %s" % (rc, log)


def subnet(name, **spec):
    s = {"protocol": "IPv4", "provider": "macvlan.default", "cidrBlock": "172.17.0.0/16",
         "gateway": "172.17.0.1", "excludeIps": ["172.17.0.0..172.17.0.10"]}
    s.update(spec)
    return {"apiVersion": "kubeovn.io/v1", "kind": "Subnet", "metadata": {"name": name}, "spec": s}


def example(name, node, subnet_name="macvlan", extra_labels=None):
    labels = {"example/node": node, "example/subnet": subnet_name}
    labels.update(extra_labels or {})
    return {"apiVersion": "reference.test/v1", "kind": "Example",
            "metadata": {"name": name, "labels": labels},
            "spec": {"node": node, "allocations": {"11": {"pod": "default/samplepod", "uid": "u1",
                                                          "ifName": "net1"}}}}


def pod(name, node=None, labels=None, finalizers=None):
    p = {"apiVersion": "v1", "kind": "Pod",
         "metadata": {"name": name, "annotations": {"k8s.v1.cni.cncf.io/networks": "macvlan"}},
         "spec": {"containers": [{"name": "c", "image": "alpine"}]}}
    if node:
        p["spec"]["nodeName"] = node
    if labels:
        p["metadata"]["labels"] = labels
    if finalizers:
        p["metadata"]["finalizers"] = finalizers
    return p


SUBNETS = "/apis/kubeovn.io/v1/subnets"
EXAMPLES = "/apis/reference.test/v1/examples"
PODS = "/api/v1/namespaces/default/pods"


class Base(unittest.TestCase):
    srv = None

    @property
    def s(self):
        return self.srv or SRV

    def req(self, *a, **kw):
        return self.s.request(*a, **kw)

    def ensure_gone(self, path):
        self.req("DELETE", path + "?gracePeriodSeconds=0")
        code, _, obj = self.req("GET", path)
        if code == 200 and obj["metadata"].get("finalizers"):
            self.req("PATCH", path, {"metadata": {"finalizers": None}},
                     ctype="application/merge-patch+json")

    def fresh(self, collection, obj):
        self.ensure_gone(collection + "/" + obj["metadata"]["name"])
        code, _, body = self.req("POST", collection, obj)
        self.assertEqual(code, 201, body)
        return body

    def assert_status(self, code, hdrs, body, ref_name, index=0, exact=True):
        """Compares an error answer with a recording: status code, content type, Status body."""
        rcode, rhdrs, rbody = load_reference(ref_name)[index]
        self.assertEqual(code, rcode, body)
        self.assertEqual(hdrs.get("content-type"), rhdrs.get("content-type"))
        self.assertEqual(list(body.keys()), list(rbody.keys()), body)
        if exact:
            self.assertEqual(normalise(body), normalise(rbody))
        else:
            for k in ("kind", "apiVersion", "status", "reason", "code"):
                self.assertEqual(body.get(k), rbody.get(k), k)

    def assert_shape(self, actual, expected, path="", skip=("managedFields",)):
        """Same keys in the same order, same types, same values modulo ids/versions/times."""
        if isinstance(expected, dict):
            self.assertIsInstance(actual, dict, path)
            self.assertEqual(list(actual.keys()), list(expected.keys()), path)
            for k in expected:
                if k in skip:
                    continue
                self.assert_shape(actual[k], expected[k], path + "." + k, skip)
        elif isinstance(expected, list):
            self.assertIsInstance(actual, list, path)
            self.assertEqual(len(actual), len(expected), path)
            for i, (a, e) in enumerate(zip(actual, expected)):
                self.assert_shape(a, e, "%s[%d]" % (path, i), skip)
        else:
            self.assertEqual(type(actual), type(expected), path)
            key = path.rsplit(".", 1)[-1]
            self.assertEqual(normalise(actual, key), normalise(expected, key), path)


# ---------------------------------------------------------------------------------------
# Recordings 01-15: custom resources
# ---------------------------------------------------------------------------------------


class CustomResourceTests(Base):
    def test_01_create_returns_201_with_server_fields(self):
        self.ensure_gone(SUBNETS + "/macvlan")
        code, hdrs, body = self.req("POST", SUBNETS, subnet("macvlan"),
                                    headers={"User-Agent": "curl/7.88.1"})
        rcode, rhdrs, rbody = load_reference("01-create-subnet-201.txt")[0]
        self.assertEqual(code, rcode)
        self.assertEqual(hdrs["content-type"], "application/json")
        self.assert_shape(body, rbody, skip=())   # managedFields too: same fieldsV1
        md = body["metadata"]
        self.assertEqual(md["generation"], 1)
        self.assertTrue(int(md["resourceVersion"]) > 0)
        self.assertRegex(md["uid"], r"^[0-9a-f-]{36}$")
        self.assertRegex(md["creationTimestamp"], r"Z$")
        for h in ("audit-id", "cache-control", "x-kubernetes-pf-flowschema-uid",
                  "x-kubernetes-pf-prioritylevel-uid", "content-length"):
            self.assertIn(h, hdrs)

    def test_02_duplicate_name_is_409_already_exists(self):
        self.fresh(SUBNETS, subnet("macvlan"))
        code, hdrs, body = self.req("POST", SUBNETS, subnet("macvlan"))
        self.assert_status(code, hdrs, body, "02-create-subnet-again-409-alreadyexists.txt")

    def test_03_invalid_is_422_with_causes(self):
        bad = {"apiVersion": "kubeovn.io/v1", "kind": "Subnet", "metadata": {"name": "bad"},
               "spec": {"protocol": "IPv5", "cidrBlock": 7}}
        code, hdrs, body = self.req("POST", SUBNETS, bad)
        self.assert_status(code, hdrs, body, "03-create-subnet-invalid-422.txt")
        # missing name and a name that is not a DNS-1123 subdomain
        code, _, body = self.req("POST", SUBNETS, {"apiVersion": "kubeovn.io/v1", "kind": "Subnet",
                                                   "metadata": {}, "spec": {}})
        self.assertEqual(code, 422)
        self.assertEqual(body["reason"], "Invalid")
        self.assertEqual(body["details"]["causes"][0]["field"], "metadata.name")
        self.assertEqual(body["details"]["causes"][0]["reason"], "FieldValueRequired")
        code, _, body = self.req("POST", SUBNETS, subnet("Bad_Name"))
        self.assertEqual(code, 422)
        self.assertEqual(body["details"]["causes"][0]["reason"], "FieldValueInvalid")
        self.assertIn("RFC 1123 subdomain", body["message"])
        code, _, body = self.req("POST", EXAMPLES, dict(example("lbl-bad", "n"), metadata={
            "name": "lbl-bad", "labels": {"bad key!": "x"}}))
        self.assertEqual(code, 422)
        self.assertEqual(body["details"]["causes"][0]["field"], "metadata.labels")

    def test_04_list_shape(self):
        self.fresh(SUBNETS, subnet("macvlan"))
        code, hdrs, body = self.req("GET", SUBNETS + "?fieldSelector=metadata.name%3Dmacvlan")
        rcode, _, rbody = load_reference("04-list-subnets.txt")[0]
        self.assertEqual(code, rcode)
        self.assert_shape(body, rbody)

    def test_05_06_update_with_current_and_stale_resource_version(self):
        created = self.fresh(SUBNETS, subnet("macvlan"))
        upd = json.loads(json.dumps(created))
        del upd["metadata"]["managedFields"]
        upd["spec"]["excludeIps"].append("172.17.0.250")
        code, _, body = self.req("PUT", SUBNETS + "/macvlan", upd)
        rcode, _, rbody = load_reference("05-update-subnet-with-rv-200.txt")[0]
        self.assertEqual(code, rcode)
        self.assert_shape(body, rbody)
        self.assertEqual(body["metadata"]["generation"], 2)
        self.assertGreater(int(body["metadata"]["resourceVersion"]),
                           int(created["metadata"]["resourceVersion"]))
        # the same body again carries the old resourceVersion now -> 409 Conflict
        code, hdrs, body = self.req("PUT", SUBNETS + "/macvlan", upd)
        self.assert_status(code, hdrs, body, "06-update-subnet-stale-rv-409-conflict.txt")

    def test_update_without_resource_version(self):
        created = self.fresh(SUBNETS, subnet("norv"))
        upd = subnet("norv", gateway="172.17.0.2")
        # A real API server refuses unconditional updates of custom resources ...
        code, _, body = self.req("PUT", SUBNETS + "/norv", upd)
        self.assertEqual(code, 422, body)
        self.assertEqual(body["details"]["causes"][0]["field"], "metadata.resourceVersion")
        self.assertIn("must be specified for an update", body["message"])
        # ... but built-in kinds (pods, leases, ...) take them
        self.fresh(PODS, pod("norv-pod", "node-a"))
        code, _, p = self.req("GET", PODS + "/norv-pod")
        p["metadata"].pop("resourceVersion")
        p["metadata"]["labels"] = {"x": "y"}
        code, _, body = self.req("PUT", PODS + "/norv-pod", p)
        self.assertEqual(code, 200, body)
        self.assertEqual(body["metadata"]["labels"], {"x": "y"})
        # and the control API can make custom resources lenient too
        self.s.ctl("POST", "/settings", {"unconditional_crd_update": True})
        try:
            code, _, body = self.req("PUT", SUBNETS + "/norv", upd)
            self.assertEqual(code, 200, body)
            self.assertEqual(body["spec"]["gateway"], "172.17.0.2")
            self.assertEqual(body["metadata"]["uid"], created["metadata"]["uid"])
        finally:
            self.s.ctl("POST", "/settings", {"unconditional_crd_update": False})
        self.ensure_gone(PODS + "/norv-pod")

    def test_07_status_subresource_and_merge_patch(self):
        with_status = subnet("macvlan")
        with_status["status"] = {"v4usingIPs": 99}
        created = self.fresh(SUBNETS, with_status)
        self.assertNotIn("status", created, "create drops status when /status exists")
        patch = {"status": {"v4availableIPs": 65523, "v4usingIPs": 1, "conditions": [
            {"type": "Ready", "status": "True", "reason": "Validated", "message": "",
             "lastTransitionTime": "2026-11-27T00:00:00Z"}]}}
        code, _, body = self.req("PATCH", SUBNETS + "/macvlan/status", patch,
                                 ctype="application/merge-patch+json",
                                 headers={"User-Agent": "curl/7.88.1"})
        self.assertEqual(code, 200, body)
        self.assertEqual(body["status"]["v4availableIPs"], 65523)
        rbody = load_reference("07-patch-subnet-status-merge-200.txt")[0][2]
        self.assertEqual(list(body.keys()), list(rbody.keys()))
        self.assertEqual(body["status"], rbody["status"])
        self.assertEqual([m.get("subresource") for m in body["metadata"]["managedFields"]],
                         [None, "status"])
        self.assertEqual(body["metadata"]["managedFields"][1]["fieldsV1"],
                         rbody["metadata"]["managedFields"][1]["fieldsV1"])
        # null deletes a key (RFC 7386)
        code, _, body = self.req("PATCH", SUBNETS + "/macvlan/status",
                                 {"status": {"v4usingIPs": None}},
                                 ctype="application/merge-patch+json")
        self.assertEqual(code, 200)
        self.assertNotIn("v4usingIPs", body["status"])
        gen = body["metadata"]["generation"]
        # the main endpoint ignores status; /status ignores everything but status
        code, _, body = self.req("PATCH", SUBNETS + "/macvlan",
                                 {"status": {"v4usingIPs": 5}, "spec": {"gateway": "172.17.0.9"}},
                                 ctype="application/merge-patch+json")
        self.assertEqual(code, 200)
        self.assertNotIn("v4usingIPs", body["status"])
        self.assertEqual(body["spec"]["gateway"], "172.17.0.9")
        self.assertEqual(body["metadata"]["generation"], gen + 1)
        full = json.loads(json.dumps(body))
        full["spec"]["gateway"] = "172.17.0.77"
        full["status"]["v4usingIPs"] = 7
        code, _, body = self.req("PUT", SUBNETS + "/macvlan/status", full)
        self.assertEqual(code, 200, body)
        self.assertEqual(body["spec"]["gateway"], "172.17.0.9")
        self.assertEqual(body["status"]["v4usingIPs"], 7)
        self.assertEqual(body["metadata"]["generation"], gen + 1, "status changes keep generation")
        # a patch that carries a stale resourceVersion is a conditional update
        code, hdrs, body = self.req("PATCH", SUBNETS + "/macvlan",
                                    {"metadata": {"resourceVersion": "1"}, "spec": {"vpc": "x"}},
                                    ctype="application/merge-patch+json")
        self.assertEqual(code, 409)
        self.assertEqual(body["reason"], "Conflict")

    def test_08_get_missing_is_404(self):
        code, hdrs, body = self.req("GET", SUBNETS + "/nosuch")
        self.assert_status(code, hdrs, body, "08-get-missing-404.txt")

    def test_11_12_label_selectors(self):
        objs = [("macvlan.172-17-0-0-26", "node-a", {}), ("sel-b", "node-b", {"tier": "x"}),
                ("sel-c", "node-c", {"tier": "y"})]
        for name, node, extra in objs:
            self.ensure_gone(EXAMPLES + "/" + name)
            code, _, body = self.req("POST", EXAMPLES, example(name, node, extra_labels=extra),
                                     headers={"User-Agent": "curl/7.88.1"})
            self.assertEqual(code, 201, body)
            if name.startswith("macvlan"):
                self.assert_shape(body, load_reference("11-create-example-with-labels-201.txt")[0][2],
                                  skip=())

        def names(sel):
            code, _, body = self.req("GET", EXAMPLES + "?labelSelector=" + urllib.parse.quote(sel))
            self.assertEqual(code, 200, body)
            return sorted(i["metadata"]["name"] for i in body["items"]
                          if i["metadata"]["name"] in {o[0] for o in objs})
        code, _, body = self.req("GET", EXAMPLES + "?labelSelector=example%2Fnode%3Dnode-a")
        self.assert_shape(body, load_reference("12-list-examples-labelselector.txt")[0][2])
        self.assertEqual(names("example/node=node-a"), ["macvlan.172-17-0-0-26"])
        self.assertEqual(names("example/node==node-b"), ["sel-b"])
        self.assertEqual(names("example/node!=node-a"), ["sel-b", "sel-c"])
        self.assertEqual(names("example/node in (node-a,node-c)"), ["macvlan.172-17-0-0-26", "sel-c"])
        self.assertEqual(names("example/node notin (node-a,node-c)"), ["sel-b"])
        self.assertEqual(names("tier"), ["sel-b", "sel-c"])
        self.assertEqual(names("!tier"), ["macvlan.172-17-0-0-26"])
        self.assertEqual(names("tier,example/node=node-c"), ["sel-c"])
        code, _, body = self.req("GET", EXAMPLES + "?labelSelector=" + urllib.parse.quote("a b c"))
        self.assertEqual(code, 400)
        self.assertEqual(body["reason"], "BadRequest")

    def test_13_field_selectors(self):
        code, hdrs, body = self.req("GET", EXAMPLES + "?fieldSelector=spec.node%3Dnode-a")
        self.assert_status(code, hdrs, body, "13-list-examples-fieldselector-unsupported-400.txt")
        self.ensure_gone(EXAMPLES + "/fs-one")
        self.req("POST", EXAMPLES, example("fs-one", "node-z"))
        code, _, body = self.req("GET", EXAMPLES + "?fieldSelector=metadata.name%3Dfs-one")
        self.assertEqual([i["metadata"]["name"] for i in body["items"]], ["fs-one"])
        code, _, body = self.req("GET", EXAMPLES + "?fieldSelector=metadata.name!%3Dfs-one")
        self.assertNotIn("fs-one", [i["metadata"]["name"] for i in body["items"]])
        code, _, body = self.req("GET", EXAMPLES + "?fieldSelector=metadata.namespace%3D")
        self.assertEqual(code, 200)
        # pods: spec.nodeName (20)
        self.fresh(PODS, pod("fs-pod-a", "fs-node-a"))
        self.fresh(PODS, pod("fs-pod-b", "fs-node-b"))
        code, _, body = self.req("GET", "/api/v1/pods?fieldSelector=spec.nodeName%3Dfs-node-a")
        self.assertEqual(code, 200)
        self.assertEqual([i["metadata"]["name"] for i in body["items"]], ["fs-pod-a"])
        code, _, body = self.req("GET", "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-nobody")
        self.assert_shape(body, load_reference("20-list-pods-on-node.txt")[0][2])
        code, _, body = self.req("GET", PODS + "?fieldSelector=metadata.namespace%3Ddefault,"
                                 "spec.nodeName%3Dfs-node-b")
        self.assertEqual([i["metadata"]["name"] for i in body["items"]], ["fs-pod-b"])
        code, _, body = self.req("GET", PODS + "?fieldSelector=spec.nosuch%3Dx")
        self.assertEqual(code, 400)
        self.assertEqual(body["message"], "field label not supported: spec.nosuch")
        for n in ("fs-pod-a", "fs-pod-b"):
            self.ensure_gone(PODS + "/" + n)

    def test_14_limit_and_continue(self):
        rcode, _, rbody = load_reference("14-list-paged-limit-1.txt")[0]
        for i in range(5):
            self.fresh(EXAMPLES, example("page-%d" % i, "pg", extra_labels={"page": "yes"}))
        seen, cont, pages, rvs = [], "", 0, set()
        for _ in range(10):
            q = "?labelSelector=page%3Dyes&limit=2" + ("&continue=" + cont if cont else "")
            code, _, body = self.req("GET", EXAMPLES + q)
            self.assertEqual(code, 200, body)
            self.assertEqual(list(body.keys()), list(rbody.keys()))
            seen += [i["metadata"]["name"] for i in body["items"]]
            rvs.add(body["metadata"]["resourceVersion"])
            pages += 1
            cont = body["metadata"]["continue"]
            if not cont:
                break
            # an object created while paging does not show up: pages are one snapshot
            if pages == 1:
                self.fresh(EXAMPLES, example("page-0b", "pg", extra_labels={"page": "yes"}))
        self.assertEqual(seen, ["page-%d" % i for i in range(5)])
        self.assertEqual(pages, 3)
        self.assertEqual(len(rvs), 1, "every page reports the snapshot's resourceVersion")
        code, _, body = self.req("GET", EXAMPLES + "?limit=1")
        self.assertTrue(body["metadata"]["continue"])
        self.assertIn("remainingItemCount", body["metadata"])
        self.ensure_gone(EXAMPLES + "/page-0b")

    def test_15_table_printer_columns(self):
        self.fresh(EXAMPLES, example("macvlan.172-17-0-0-26", "node-a"))
        accept = "application/json;as=Table;v=v1;g=meta.k8s.io"
        code, hdrs, body = self.req("GET", EXAMPLES + "?fieldSelector=metadata.name%3Dmacvlan.172-17-0-0-26",
                                    headers={"Accept": accept})
        ref = load_reference("15-table-printer-columns.txt")[1][2]
        self.assertEqual(code, 200)
        self.assertEqual(hdrs["content-type"], "application/json")
        self.assertEqual(list(body.keys()), list(ref.keys()))
        self.assertEqual(body["columnDefinitions"], ref["columnDefinitions"])
        self.assertEqual(body["rows"][0]["cells"], ref["rows"][0]["cells"])
        self.assertEqual(body["rows"][0]["object"]["kind"], "PartialObjectMetadata")
        self.assertEqual(list(body["rows"][0]["object"]["metadata"].keys()),
                         list(ref["rows"][0]["object"]["metadata"].keys()))
        # built-in kinds have their own columns; CRDs without printer columns get Name + Age
        code, _, body = self.req("GET", PODS, headers={"Accept": accept})
        self.assertEqual([c["name"] for c in body["columnDefinitions"]][:4],
                         ["Name", "Ready", "Status", "Restarts"])
        code, _, body = self.req("GET", "/apis/sublease.io/v1alpha1/ipblocks", headers={"Accept": accept})
        self.assertEqual(body["kind"], "Table")


# ---------------------------------------------------------------------------------------
# Auth (09, 10), deletes (25-27), finalizers
# ---------------------------------------------------------------------------------------


class AuthTests(Base):
    def test_10_unauthorized(self):
        for tok in ("", "wrong-token"):
            code, hdrs, body = self.req("GET", "/api/v1/pods", token=tok)
            self.assert_status(code, hdrs, body, "10-unauthorized-401.txt")
            self.assertNotIn("x-kubernetes-pf-flowschema-uid", hdrs)

    def test_09_forbidden_by_deny_rule(self):
        self.s.ctl("POST", "/tokens", {"token": "ipam-token", "user": "ipam-user"})
        self.s.ctl("POST", "/deny", {"verb": "list", "group": "", "resource": "pods",
                                     "user": "ipam-user"})
        try:
            code, hdrs, body = self.req("GET", "/api/v1/pods", token="ipam-token")
            self.assert_status(code, hdrs, body, "09-forbidden-403.txt")
            self.assertEqual(hdrs.get("x-content-type-options"), "nosniff")
            code, _, _ = self.req("GET", "/api/v1/pods")          # another user is not denied
            self.assertEqual(code, 200)
        finally:
            self.s.ctl("DELETE", "/deny")

    def test_allowlist_like_a_cluster_role(self):
        self.s.ctl("POST", "/tokens", {"token": "rbac-token", "user": "system:serviceaccount:kube-system:sublease"})
        rules = [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "patch"]},
                 {"apiGroups": ["kubeovn.io"], "resources": ["subnets", "subnets/status"],
                  "verbs": ["get", "list", "watch", "patch"]}]
        self.s.ctl("POST", "/allow", {"rules": rules})
        try:
            code, _, _ = self.req("GET", SUBNETS, token="rbac-token")
            self.assertEqual(code, 200)
            code, _, body = self.req("POST", SUBNETS, subnet("rbac-x"), token="rbac-token")
            self.assertEqual(code, 403)
            self.assertEqual(body["message"], 'subnets.kubeovn.io is forbidden: User '
                             '"system:serviceaccount:kube-system:sublease" cannot create resource '
                             '"subnets" in API group "kubeovn.io" at the cluster scope')
            self.assertEqual(body["details"], {"group": "kubeovn.io", "kind": "subnets"})
            code, _, body = self.req("POST", PODS + "/x/binding", {"target": {"name": "n"}},
                                     token="rbac-token")
            self.assertEqual(code, 403)
            self.assertIn('cannot create resource "pods/binding" in API group "" in the namespace '
                          '"default"', body["message"])
        finally:
            self.s.ctl("DELETE", "/allow")

    def test_token_rotation(self):
        self.s.ctl("POST", "/tokens", {"token": "rot-1", "user": "rot"})
        self.assertEqual(self.req("GET", "/api", token="rot-1")[0], 200)
        self.s.ctl("DELETE", "/tokens", {"token": "rot-1"})
        self.assertEqual(self.req("GET", "/api", token="rot-1")[0], 401)


class DeleteTests(Base):
    def test_25_graceful_pod_delete_then_fake_kubelet_finishes(self):
        self.fresh(PODS, pod("grace-pod", "node-a"))
        self.s.ctl("POST", "/kubelet", {"delay_ms": 400})
        try:
            code, _, body = self.req("DELETE", PODS + "/grace-pod")
            ref = load_reference("25-delete-pod-graceful-200.txt")[0][2]
            self.assertEqual(code, 200)
            self.assertEqual(list(body["metadata"].keys()), list(ref["metadata"].keys()))
            self.assertEqual(body["metadata"]["deletionGracePeriodSeconds"], 30)
            self.assertEqual(body["kind"], "Pod")
            code, _, still = self.req("GET", PODS + "/grace-pod")
            self.assertEqual(code, 200, "a terminating pod stays until its grace period ends")
            self.assertIn("deletionTimestamp", still["metadata"])
            for _ in range(50):
                if self.req("GET", PODS + "/grace-pod")[0] == 404:
                    break
                time.sleep(0.1)
            self.assertEqual(self.req("GET", PODS + "/grace-pod")[0], 404)
        finally:
            self.s.ctl("POST", "/kubelet", {"grace_scale": 1.0})

    def test_26_grace_period_zero_deletes_at_once(self):
        self.fresh(PODS, pod("grace0-pod", "node-a"))
        code, _, body = self.req("DELETE", PODS + "/grace0-pod?gracePeriodSeconds=0")
        ref = load_reference("26-delete-pod-grace0-200.txt")[0][2]
        self.assertEqual(code, 200)
        self.assert_shape(body["metadata"], ref["metadata"], skip=("managedFields", "annotations", "name"))
        self.assertEqual(body["metadata"]["deletionGracePeriodSeconds"], 0)
        self.assertEqual(self.req("GET", PODS + "/grace0-pod")[0], 404)
        # custom resources are deleted at once and answer a Success Status
        self.fresh(SUBNETS, subnet("del-now"))
        code, _, body = self.req("DELETE", SUBNETS + "/del-now")
        self.assertEqual(code, 200)
        self.assertEqual((body["kind"], body["status"], body["details"]["name"]),
                         ("Status", "Success", "del-now"))

    def test_27_delete_preconditions(self):
        created = self.fresh(SUBNETS, subnet("macvlan"))
        opts = {"kind": "DeleteOptions", "apiVersion": "v1",
                "preconditions": {"uid": "00000000-0000-0000-0000-000000000000"}}
        code, hdrs, body = self.req("DELETE", SUBNETS + "/macvlan", opts)
        self.assert_status(code, hdrs, body, "27-delete-with-stale-uid-precondition-409.txt")
        opts = {"preconditions": {"resourceVersion": "1"}}
        code, _, body = self.req("DELETE", SUBNETS + "/macvlan", opts)
        self.assertEqual((code, body["reason"]), (409, "Conflict"))
        self.assertIn("the ResourceVersion in the precondition (1) does not match", body["message"])
        opts = {"preconditions": {"uid": created["metadata"]["uid"],
                                  "resourceVersion": created["metadata"]["resourceVersion"]}}
        code, _, body = self.req("DELETE", SUBNETS + "/macvlan", opts)
        self.assertEqual(code, 200, body)

    def test_finalizers_keep_object_until_removed(self):
        obj = example("fin-1", "n")
        obj["metadata"]["finalizers"] = ["sublease.io/test"]
        self.fresh(EXAMPLES, obj)
        code, _, body = self.req("DELETE", EXAMPLES + "/fin-1")
        self.assertEqual(code, 200)
        self.assertIn("deletionTimestamp", body["metadata"])
        code, _, got = self.req("GET", EXAMPLES + "/fin-1")
        self.assertEqual(code, 200)
        code, _, body = self.req("PATCH", EXAMPLES + "/fin-1",
                                 {"metadata": {"finalizers": ["sublease.io/other"]}},
                                 ctype="application/merge-patch+json")
        self.assertEqual(code, 422, "no new finalizers while terminating")
        code, _, body = self.req("PATCH", EXAMPLES + "/fin-1", {"metadata": {"finalizers": None}},
                                 ctype="application/merge-patch+json")
        self.assertEqual(code, 200, body)
        self.assertEqual(self.req("GET", EXAMPLES + "/fin-1")[0], 404)

    def test_namespace_must_exist(self):
        code, _, body = self.req("POST", "/api/v1/namespaces/nowhere/pods", pod("p"))
        self.assertEqual((code, body["reason"], body["message"]),
                         (404, "NotFound", 'namespaces "nowhere" not found'))
        code, _, _ = self.req("POST", "/api/v1/namespaces",
                              {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns-t"}})
        self.assertEqual(code, 201)
        code, _, _ = self.req("POST", "/api/v1/namespaces/ns-t/pods", pod("p", "node-a"))
        self.assertEqual(code, 201)
        code, _, _ = self.req("DELETE", "/api/v1/namespaces/ns-t")
        self.assertEqual(code, 200)
        self.assertEqual(self.req("GET", "/api/v1/namespaces/ns-t/pods/p")[0], 404)


# ---------------------------------------------------------------------------------------
# resourceVersion semantics, patches, leases, nodes
# ---------------------------------------------------------------------------------------


class VersionTests(Base):
    def test_one_global_counter(self):
        a = self.fresh(SUBNETS, subnet("rv-a"))
        b = self.fresh(PODS, pod("rv-b", "node-a"))
        c = self.fresh(EXAMPLES, example("rv-c", "n"))
        rvs = [int(x["metadata"]["resourceVersion"]) for x in (a, b, c)]
        self.assertEqual(rvs, sorted(rvs))
        self.assertEqual(len(set(rvs)), 3)
        code, _, lst = self.req("GET", "/api/v1/pods")
        self.assertGreaterEqual(int(lst["metadata"]["resourceVersion"]), rvs[-1])
        # a no-op patch does not write (no new resourceVersion), like etcd
        code, _, same = self.req("PATCH", SUBNETS + "/rv-a", {"spec": {"gateway": "172.17.0.1"}},
                                 ctype="application/merge-patch+json")
        self.assertEqual(same["metadata"]["resourceVersion"], a["metadata"]["resourceVersion"])

    def test_31_list_exact_resource_version(self):
        a = self.fresh(EXAMPLES, example("exact-a", "n"))
        rv1 = a["metadata"]["resourceVersion"]
        self.req("PATCH", EXAMPLES + "/exact-a", {"spec": {"node": "m"}},
                 ctype="application/merge-patch+json")
        code, _, body = self.req("GET", EXAMPLES + "?resourceVersion=%s&resourceVersionMatch=Exact"
                                 "&fieldSelector=metadata.name%%3Dexact-a" % rv1)
        self.assertEqual(code, 200, body)
        self.assertEqual(body["metadata"]["resourceVersion"], rv1)
        self.assertEqual(body["items"][0]["spec"]["node"], "n", "the list shows the old state")
        self.s.ctl("POST", "/compact")
        code, hdrs, body = self.req("GET", EXAMPLES + "?resourceVersion=%s&resourceVersionMatch=Exact" % rv1)
        self.assert_status(code, hdrs, body, "31-list-with-compacted-rv-exact-410.txt")

    def test_json_patch_and_strategic_merge_patch(self):
        self.fresh(EXAMPLES, example("jp-1", "n"))
        ops = [{"op": "test", "path": "/spec/node", "value": "n"},
               {"op": "replace", "path": "/spec/node", "value": "m"},
               {"op": "add", "path": "/metadata/labels/extra", "value": "1"}]
        code, _, body = self.req("PATCH", EXAMPLES + "/jp-1", ops, ctype="application/json-patch+json")
        self.assertEqual(code, 200, body)
        self.assertEqual((body["spec"]["node"], body["metadata"]["labels"]["extra"]), ("m", "1"))
        code, _, body = self.req("PATCH", EXAMPLES + "/jp-1", [{"op": "test", "path": "/spec/node",
                                                                "value": "zzz"}],
                                 ctype="application/json-patch+json")
        self.assertEqual(code, 422)
        code, _, body = self.req("PATCH", EXAMPLES + "/jp-1", {"spec": {}},
                                 ctype="application/strategic-merge-patch+json")
        self.assertEqual(code, 415, "custom resources do not take strategic merge patches")
        self.fresh(PODS, pod("smp-1", "node-a", labels={"a": "1"}))
        code, _, body = self.req("PATCH", PODS + "/smp-1", {"metadata": {"labels": {"b": "2"}}},
                                 ctype="application/strategic-merge-patch+json")
        self.assertEqual(code, 200, body)
        self.assertEqual(body["metadata"]["labels"], {"a": "1", "b": "2"})
        # pod spec is immutable apart from a few fields: nodeName only through binding
        code, _, body = self.req("PATCH", PODS + "/smp-1", {"spec": {"nodeName": "node-b"}},
                                 ctype="application/merge-patch+json")
        self.assertEqual(code, 422)
        self.assertEqual(body["details"]["causes"][0]["field"], "spec")
        self.ensure_gone(PODS + "/smp-1")

    def test_statefulsets_are_served_under_apps_v1(self):
        code, _, body = self.req("GET", "/apis/apps/v1")
        sts = next(r for r in body["resources"] if r["name"] == "statefulsets")
        self.assertEqual((sts["kind"], sts["namespaced"], sts["shortNames"]), ("StatefulSet", True, ["sts"]))
        self.assertIn("statefulsets/status", [r["name"] for r in body["resources"]])
        code, _, body = self.req("GET", "/apis")
        self.assertIn("apps", [g["name"] for g in body["groups"]])
        base = "/apis/apps/v1/namespaces/default/statefulsets"
        self.ensure_gone(base + "/web-t")
        sts = {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "web-t"},
               "spec": {"replicas": 3, "serviceName": "web-t", "selector": {"matchLabels": {"app": "w"}},
                        "template": {"metadata": {"labels": {"app": "w"}},
                                     "spec": {"containers": [{"name": "c", "image": "alpine"}]}}}}
        code, _, created = self.req("POST", base, sts)
        self.assertEqual(code, 201, created)
        self.assertTrue(created["metadata"]["uid"])
        self.assertEqual(created["metadata"]["generation"], 1)
        code, _, _ = self.req("POST", base, sts)
        self.assertEqual(code, 409)
        code, _, patched = self.req("PATCH", base + "/web-t", {"spec": {"replicas": 0}},
                                    ctype="application/merge-patch+json")
        self.assertEqual((code, patched["spec"]["replicas"], patched["metadata"]["generation"]), (200, 0, 2))
        code, _, listed = self.req("GET", base)
        self.assertIn("web-t", [i["metadata"]["name"] for i in listed["items"]])
        stale = dict(created)
        code, _, _ = self.req("PUT", base + "/web-t", stale)
        self.assertEqual(code, 409, "an update with a stale resourceVersion")
        code, _, got = self.req("GET", base + "/web-t")
        got["spec"]["replicas"] = 2
        code, _, updated = self.req("PUT", base + "/web-t", got)
        self.assertEqual((code, updated["spec"]["replicas"]), (200, 2))
        code, _, _ = self.req("DELETE", base + "/web-t")
        self.assertEqual(code, 200)
        code, _, _ = self.req("GET", base + "/web-t")
        self.assertEqual(code, 404)

    def test_leases_and_nodes(self):
        lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                 "metadata": {"name": "sublease-leader", "namespace": "kube-system"},
                 "spec": {"holderIdentity": "node-a", "leaseDurationSeconds": 15}}
        self.ensure_gone("/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/sublease-leader")
        code, _, body = self.req("POST", "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases", lease)
        self.assertEqual(code, 201, body)
        body["spec"]["holderIdentity"] = "node-b"
        code, _, b2 = self.req("PUT", "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/sublease-leader", body)
        self.assertEqual(code, 200)
        code, _, b3 = self.req("PUT", "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/sublease-leader", body)
        self.assertEqual(code, 409, "a second contender with the same version loses")
        node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-t"},
                "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
        self.ensure_gone("/api/v1/nodes/node-t")
        code, _, body = self.req("POST", "/api/v1/nodes", node)
        self.assertEqual(code, 201, body)
        code, _, body = self.req("DELETE", "/api/v1/nodes/node-t")
        self.assertEqual(code, 200)


# ---------------------------------------------------------------------------------------
# Watches (21, 30, 32)
# ---------------------------------------------------------------------------------------


def is_bm(e):
    return e["type"] == "BOOKMARK"


class WatchTests(Base):
    def test_21_pod_lifecycle_on_a_node_watch(self):
        node = "wnode-21"
        code, _, lst = self.req("GET", "/api/v1/pods?fieldSelector=spec.nodeName%3D" + node)
        rv = lst["metadata"]["resourceVersion"]
        w = self.s.watch("/api/v1/pods?fieldSelector=spec.nodeName%%3D%s&watch=1&resourceVersion=%s"
                         "&allowWatchBookmarks=true&timeoutSeconds=3" % (node, rv))
        try:
            ref_status, ref_hdrs, ref_events = load_reference("21-watch-pods-on-node.raw")[0]
            self.assertEqual(w.status, 200)
            self.assertEqual(w.headers["content-type"], ref_hdrs["content-type"])
            self.assertEqual(w.headers["transfer-encoding"], "chunked")
            self.ensure_gone(PODS + "/samplepod")
            code, _, created = self.req("POST", PODS, pod("samplepod"))       # 22: unscheduled
            self.assertEqual(code, 201)
            self.assert_shape(created, load_reference("22-create-pod-unscheduled-201.txt")[0][2])
            code, _, body = self.req("POST", PODS + "/samplepod/binding",      # 23
                                     {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "samplepod"},
                                      "target": {"apiVersion": "v1", "kind": "Node", "name": node}})
            self.assertEqual((code, body), load_reference("23-bind-pod-201.txt")[0][::2])
            code, _, body = self.req("POST", PODS + "/samplepod/binding", {"target": {"name": node}})
            self.assertEqual((code, body["reason"]), (409, "Conflict"))
            ann = {"macvlan.default.kubernetes.io/ip_address": "172.17.0.11",
                   "macvlan.default.kubernetes.io/cidr": "172.17.0.0/16",
                   "macvlan.default.kubernetes.io/gateway": "172.17.0.1",
                   "macvlan.default.kubernetes.io/allocated": "true"}
            code, _, body = self.req("PATCH", PODS + "/samplepod", {"metadata": {"annotations": ann}},
                                     ctype="application/merge-patch+json")                # 24
            ref24 = load_reference("24-patch-pod-annotations-merge-200.txt")[0][2]
            self.assertEqual(code, 200)
            self.assert_shape(body, ref24, skip=("managedFields", "spec"))
            self.assertEqual(body["spec"]["nodeName"], node)
            self.assertEqual(self.req("DELETE", PODS + "/samplepod")[0], 200)             # 25
            code, _, body = self.req("DELETE", PODS + "/samplepod?gracePeriodSeconds=0")  # 26
            self.assertEqual(code, 200)
            events = w.events_until(lambda ev: False, max_seconds=8)
            self.assertTrue(w.ended, "the watch ends at timeoutSeconds with the terminating chunk")
            kinds = [e["type"] for e in events if not is_bm(e)]
            self.assertEqual(kinds, [e["type"] for e in ref_events if not is_bm(e)])
            self.assertEqual(kinds, ["ADDED", "MODIFIED", "MODIFIED", "MODIFIED", "DELETED"])
            real = [e for e in events if not is_bm(e)]
            refs = [e for e in ref_events if not is_bm(e)]
            for got, ref in zip(real, refs):
                self.assertEqual(list(got["object"]["metadata"].keys()), list(ref["object"]["metadata"].keys()))
                self.assertEqual(got["object"]["metadata"].get("deletionGracePeriodSeconds"),
                                 ref["object"]["metadata"].get("deletionGracePeriodSeconds"))
            rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in real]
            self.assertEqual(rvs, sorted(rvs))
            self.assertEqual(rvs[0], int(created["metadata"]["resourceVersion"]) + 1,
                             "ADDED carries the binding's version: the pod entered the selector then")
            bms = [e for e in events if is_bm(e)]
            self.assertTrue(bms, "bookmarks were allowed")
            self.assertEqual(bms[0]["object"], {"kind": "Pod", "apiVersion": "v1", "metadata": {
                "resourceVersion": bms[0]["object"]["metadata"]["resourceVersion"],
                "creationTimestamp": None}, "spec": {"containers": None}, "status": {}})
        finally:
            w.close()

    def test_30_watch_from_compacted_version_is_200_then_410_error(self):
        self.fresh(SUBNETS, subnet("w30"))
        code, _, lst = self.req("GET", SUBNETS)
        old = int(lst["metadata"]["resourceVersion"])
        self.req("PATCH", SUBNETS + "/w30", {"spec": {"vpc": "a"}}, ctype="application/merge-patch+json")
        self.s.ctl("POST", "/compact")
        w = self.s.watch(SUBNETS + "?watch=1&resourceVersion=%d&allowWatchBookmarks=true" % old)
        try:
            _, rhdrs, revents = load_reference("30-watch-from-compacted-rv-error-410.raw")[0]
            self.assertEqual(w.status, 200)
            ev = w.next_event()
            self.assertEqual(ev["type"], "ERROR")
            self.assertEqual(list(ev["object"].keys()), list(revents[0]["object"].keys()))
            self.assertEqual(normalise(ev["object"]), normalise(revents[0]["object"]))
            self.assertIsNone(w.next_event(), "then the stream ends")
        finally:
            w.close()

    def test_32_label_filtered_watch_gets_bookmarks(self):
        self.fresh(EXAMPLES, example("bm-mine", "bm-node-a"))
        w = self.s.watch(EXAMPLES + "?labelSelector=example%2Fnode%3Dbm-node-a&watch=1&resourceVersion="
                         "&allowWatchBookmarks=true&timeoutSeconds=20")
        try:
            _, _, refs = load_reference("32-watch-filtered-with-bookmarks.raw")[0]
            first = w.next_event()
            self.assertEqual(first["type"], "ADDED")
            self.assertEqual(first["object"]["metadata"]["name"], "bm-mine")
            self.assertEqual(list(first["object"].keys()), list(refs[0]["object"].keys()))
            self.fresh(EXAMPLES, example("bm-other", "bm-node-b"))     # outside the selector
            self.req("PATCH", EXAMPLES + "/bm-other", {"spec": {"node": "x"}},
                     ctype="application/merge-patch+json")
            code, _, other = self.req("GET", EXAMPLES + "/bm-other")
            target = int(other["metadata"]["resourceVersion"])
            evs = w.events_until(lambda evs: is_bm(evs[-1]) and
                                 int(evs[-1]["object"]["metadata"]["resourceVersion"]) >= target,
                                 max_seconds=5)
            self.assertTrue(all(is_bm(e) for e in evs), evs)
            self.assertEqual(evs[-1]["object"], {"apiVersion": "reference.test/v1", "kind": "Example",
                                                 "metadata": {"resourceVersion": str(target)}})
            self.assertEqual(list(evs[-1]["object"].keys()), list(refs[1]["object"].keys()))
        finally:
            w.close()

    def test_selector_transitions_are_added_and_deleted(self):
        self.fresh(EXAMPLES, example("tr-1", "tr-x"))
        w = self.s.watch(EXAMPLES + "?labelSelector=example%2Fnode%3Dtr-y&watch=1&timeoutSeconds=10")
        try:
            self.req("PATCH", EXAMPLES + "/tr-1", {"metadata": {"labels": {"example/node": "tr-y"}}},
                     ctype="application/merge-patch+json")
            self.req("PATCH", EXAMPLES + "/tr-1", {"spec": {"node": "tr-y"}},
                     ctype="application/merge-patch+json")
            code, _, last = self.req("PATCH", EXAMPLES + "/tr-1",
                                     {"metadata": {"labels": {"example/node": "tr-z"}}},
                                     ctype="application/merge-patch+json")
            evs = w.events_until(lambda e: len([x for x in e if not is_bm(x)]) >= 3, max_seconds=5)
            evs = [e for e in evs if not is_bm(e)]
            self.assertEqual([e["type"] for e in evs], ["ADDED", "MODIFIED", "DELETED"])
            gone = evs[2]["object"]
            self.assertEqual(gone["metadata"]["labels"]["example/node"], "tr-y",
                             "DELETED shows the last state that matched ...")
            self.assertEqual(gone["metadata"]["resourceVersion"], last["metadata"]["resourceVersion"],
                             "... at the version of the change")
        finally:
            w.close()

    def test_watch_replays_from_version_in_window_and_rv0_starts_with_state(self):
        a = self.fresh(EXAMPLES, example("rp-1", "rp"))
        rv = a["metadata"]["resourceVersion"]
        self.req("PATCH", EXAMPLES + "/rp-1", {"spec": {"node": "rp2"}}, ctype="application/merge-patch+json")
        self.req("DELETE", EXAMPLES + "/rp-1")
        w = self.s.watch(EXAMPLES + "?watch=1&resourceVersion=%s&timeoutSeconds=1" % rv)
        try:
            evs = [e for e in w.events_until(lambda e: False, 5)
                   if e["object"]["metadata"].get("name") == "rp-1"]
            self.assertEqual([e["type"] for e in evs], ["MODIFIED", "DELETED"])
        finally:
            w.close()
        self.fresh(EXAMPLES, example("rp-2", "rp"))
        for rv0 in ("0", ""):
            w = self.s.watch(EXAMPLES + "?watch=1&resourceVersion=%s&fieldSelector=metadata.name%%3Drp-2"
                             "&timeoutSeconds=1" % rv0)
            try:
                evs = w.events_until(lambda e: False, 5)
                self.assertEqual([(e["type"], e["object"]["metadata"]["name"]) for e in evs],
                                 [("ADDED", "rp-2")])
            finally:
                w.close()

    def test_drop_watches(self):
        for mode in ("clean", "abort"):
            w = self.s.watch(EXAMPLES + "?watch=1&resourceVersion=0&labelSelector=nothing%3Dhere"
                             "&timeoutSeconds=30")
            try:
                time.sleep(0.2)
                code, body = self.s.ctl("POST", "/drop-watches", {"mode": mode})
                self.assertEqual(code, 200)
                self.assertGreaterEqual(body["dropped"], 1)
                if mode == "clean":
                    self.assertIsNone(w.next_event())
                else:
                    with self.assertRaises((ConnectionError, OSError, ValueError)):
                        for _ in range(5):
                            w.next_event()
            finally:
                w.close()

    def test_table_watch(self):
        self.fresh(EXAMPLES, example("tw-1", "tw"))
        w = self.s.watch(EXAMPLES + "?watch=1&fieldSelector=metadata.name%3Dtw-1&timeoutSeconds=1",
                         headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"})
        try:
            ev = w.next_event()
            self.assertEqual((ev["type"], ev["object"]["kind"]), ("ADDED", "Table"))
            self.assertEqual(ev["object"]["rows"][0]["cells"], ["tw-1", "tw"])
        finally:
            w.close()


# ---------------------------------------------------------------------------------------
# Discovery, control API, faults
# ---------------------------------------------------------------------------------------


class DiscoveryAndControlTests(Base):
    def test_discovery(self):
        code, _, body = self.req("GET", "/api")
        self.assertEqual((code, body["kind"], body["versions"]), (200, "APIVersions", ["v1"]))
        code, _, body = self.req("GET", "/api/v1")
        pods = next(r for r in body["resources"] if r["name"] == "pods")
        self.assertEqual((pods["kind"], pods["namespaced"], pods["shortNames"]), ("Pod", True, ["po"]))
        self.assertIn("pods/binding", [r["name"] for r in body["resources"]])
        code, _, body = self.req("GET", "/apis")
        names = [g["name"] for g in body["groups"]]
        for g in ("kubeovn.io", "sublease.io", "coordination.k8s.io", "reference.test"):
            self.assertIn(g, names)
        code, _, body = self.req("GET", "/apis/kubeovn.io/v1")
        sub = next(r for r in body["resources"] if r["name"] == "subnets")
        self.assertEqual((sub["kind"], sub["namespaced"]), ("Subnet", False))
        self.assertIn("watch", sub["verbs"])
        self.assertIn("subnets/status", [r["name"] for r in body["resources"]])
        code, _, body = self.req("GET", "/apis/sublease.io/v1alpha1")
        self.assertEqual([r["name"] for r in body["resources"]], ["ipblocks"])
        code, _, body = self.req("GET", "/version")
        self.assertEqual((body["major"], body["minor"]), ("1", "26"))
        code, _, body = self.req("GET", "/apis/nosuch.io/v1/things")
        self.assertEqual((code, body["reason"]), (404, "NotFound"))

    def test_register_crd_namespaced(self):
        code, _ = self.s.ctl("POST", "/crds", {"group": "t.example", "version": "v2", "plural": "widgets",
                                              "kind": "Widget", "scope": "Namespaced",
                                              "shortNames": ["wd"], "status": True})
        self.assertIn(code, (201, 409))
        code, _, body = self.req("POST", "/apis/t.example/v2/namespaces/default/widgets",
                                 {"apiVersion": "t.example/v2", "kind": "Widget", "metadata": {"name": "w1"},
                                  "spec": {"a": 1}})
        self.assertIn(code, (201, 409), body)
        code, _, body = self.req("GET", "/apis/t.example/v2/widgets")
        self.assertEqual(code, 200)
        self.assertEqual(body["kind"], "WidgetList")
        code, _, body = self.req("GET", "/apis/t.example/v2/namespaces/default/widgets/w1/status")
        self.assertEqual(code, 200)

    def test_faults(self):
        s = self.s
        s.ctl("POST", "/faults", {"method": "GET", "path_prefix": "/apis/kubeovn.io", "count": 1,
                                  "action": "error", "status": 500})
        code, _, body = self.req("GET", SUBNETS)
        self.assertEqual((code, body["reason"]), (500, "InternalError"))
        self.assertEqual(self.req("GET", SUBNETS)[0], 200, "count=1: only the next request fails")
        s.ctl("POST", "/faults", {"path_prefix": "/apis/kubeovn.io", "count": 1, "action": "throttle",
                                  "retry_after": 2})
        code, hdrs, body = self.req("GET", SUBNETS)
        self.assertEqual((code, hdrs["retry-after"], body["reason"], body["details"]["retryAfterSeconds"]),
                         (429, "2", "TooManyRequests", 2))
        s.ctl("POST", "/faults", {"path_prefix": "/apis/kubeovn.io", "count": 1, "action": "delay",
                                  "delay_ms": 300})
        t0 = time.monotonic()
        self.assertEqual(self.req("GET", SUBNETS)[0], 200)
        self.assertGreaterEqual(time.monotonic() - t0, 0.29)
        s.ctl("POST", "/faults", {"path_prefix": "/apis/kubeovn.io", "count": 1, "action": "close"})
        with self.assertRaises((ConnectionError, OSError, Exception)):
            self.req("GET", SUBNETS)
        s.ctl("POST", "/faults", {"path_prefix": "/apis/kubeovn.io", "count": 1, "action": "hang",
                                  "delay_ms": 5000})
        with self.assertRaises(socket.timeout):
            self.req("GET", SUBNETS, timeout=0.5)
        s.ctl("DELETE", "/faults")
        self.assertEqual(self.req("GET", SUBNETS)[0], 200)

    def test_unavailable_and_back(self):
        s = self.s
        code, _ = s.ctl("POST", "/unavailable", {})
        self.assertEqual(code, 200)
        try:
            with self.assertRaises(ConnectionRefusedError):
                self.req("GET", "/api", timeout=2)
        finally:
            s.ctl("POST", "/available")
        self.assertEqual(self.req("GET", "/api")[0], 200)
        s.ctl("POST", "/unavailable", {"duration_ms": 300})
        with self.assertRaises(ConnectionRefusedError):
            self.req("GET", "/api", timeout=2)
        for _ in range(50):
            try:
                if self.req("GET", "/api", timeout=2)[0] == 200:
                    break
            except OSError:
                time.sleep(0.05)
        self.assertEqual(self.req("GET", "/api")[0], 200)

    def test_request_log(self):
        _, body = self.s.ctl("GET", "/requests")
        last = body["last"]
        self.req("GET", SUBNETS + "?limit=3", headers={"User-Agent": "subleased/0.1"})
        self.req("GET", "/api/v1/pods", token="bad")
        # A request is logged once its answer has been sent, so the client may ask a moment
        # before its row is there: wait for it (bounded).
        deadline = time.monotonic() + 10
        while True:
            _, body = self.s.ctl("GET", "/requests?since=%d" % last)
            rows = [(r["method"], r["path"], r["verb"], r["resource"], r["user_agent"], r["status"])
                    for r in body["requests"]]
            if len(rows) >= 2 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.assertIn(("GET", SUBNETS + "?limit=3", "list", "subnets", "subleased/0.1", 200), rows)
        self.assertIn(401, [r[5] for r in rows])

    def test_concurrent_cas_updates(self):
        created = self.fresh(EXAMPLES, {"apiVersion": "reference.test/v1", "kind": "Example",
                                        "metadata": {"name": "cas-1"}, "spec": {"allocations": {}}})
        errors = []

        def worker(n):
            try:
                conn = self.s.connection(10)
                done = 0
                for _ in range(200):
                    if done == 5:
                        break
                    _, _, cur = self.s.request("GET", EXAMPLES + "/cas-1", conn=conn)
                    cur["spec"].setdefault("allocations", {})["w%d-%d" % (n, done)] = {"pod": "p"}
                    code, _, _ = self.s.request("PUT", EXAMPLES + "/cas-1", cur, conn=conn)
                    if code == 200:
                        done += 1
                    elif code != 409:
                        errors.append(code)
                conn.close()
            except Exception as e:   # noqa
                errors.append(repr(e))
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(errors, [])
        _, _, final = self.req("GET", EXAMPLES + "/cas-1")
        self.assertEqual(len(final["spec"]["allocations"]), 40, "no lost update")
        self.assertEqual(final["metadata"]["generation"], 41)
        self.assertGreater(int(final["metadata"]["resourceVersion"]), int(created["metadata"]["resourceVersion"]))


# ---------------------------------------------------------------------------------------
# Servers of their own: restart with persistence, window overflow, plain HTTP, SIGTERM
# ---------------------------------------------------------------------------------------


class OwnServerTests(Base):
    def test_load_starts_from_a_snapshot_and_never_writes_it(self):
        d = tempfile.mkdtemp(prefix="fakeapi-load-")
        try:
            snap = os.path.join(d, "snapshot.json")
            s1 = FakeApiServer("--persist", snap, state_dir=d).start()
            self.srv = s1
            p = self.fresh(PODS, pod("loaded-pod", "node-a"))
            self.assertEqual(s1.stop(), 0)
            with open(snap, "rb") as f:
                before = f.read()
            s2 = FakeApiServer("--load", snap, state_dir=d, port=s1.port).start()
            self.srv = s2
            code, _, got = self.req("GET", PODS + "/loaded-pod")
            self.assertEqual((code, got["metadata"]["uid"]), (200, p["metadata"]["uid"]))
            self.fresh(SUBNETS, subnet("not-kept"))
            self.assertEqual(s2.stop(), 0)
            with open(snap, "rb") as f:
                self.assertEqual(f.read(), before, "--load never writes the snapshot")
        finally:
            self.srv = None
            shutil.rmtree(d, ignore_errors=True)

    def test_persist_and_restart(self):
        d = tempfile.mkdtemp(prefix="fakeapi-persist-")
        try:
            snap = os.path.join(d, "snapshot.json")
            s1 = FakeApiServer("--persist", snap, state_dir=d).start()
            self.srv = s1
            self.fresh(SUBNETS, subnet("keep"))
            p = self.fresh(PODS, pod("keep-pod", "node-a"))
            code, _, lst = self.req("GET", SUBNETS)
            rv_before = int(lst["metadata"]["resourceVersion"])
            with open(s1.info["ca_file"]) as f:
                ca_before = f.read()
            self.assertEqual(s1.stop(), 0)
            s2 = FakeApiServer("--persist", snap, state_dir=d, port=s1.port).start()
            self.srv = s2
            self.assertEqual(s2.port, s1.port)
            with open(s2.info["ca_file"]) as f:
                self.assertEqual(f.read(), ca_before, "same CA after restart")
            code, _, got = self.req("GET", PODS + "/keep-pod")
            self.assertEqual((code, got["metadata"]["uid"]), (200, p["metadata"]["uid"]))
            code, _, lst = self.req("GET", SUBNETS)
            self.assertEqual([i["metadata"]["name"] for i in lst["items"]], ["keep"])
            self.assertGreaterEqual(int(lst["metadata"]["resourceVersion"]), rv_before)
            created = self.fresh(SUBNETS, subnet("after"))
            self.assertGreater(int(created["metadata"]["resourceVersion"]), rv_before)
            # the new API server's watch cache starts empty: older versions are gone (30)
            w = s2.watch(SUBNETS + "?watch=1&resourceVersion=%d" % (rv_before - 1))
            try:
                ev = w.next_event()
                self.assertEqual((w.status, ev["type"], ev["object"]["code"]), (200, "ERROR", 410))
            finally:
                w.close()
            self.assertEqual(s2.stop(), 0)
        finally:
            self.srv = None
            shutil.rmtree(d, ignore_errors=True)

    def test_watch_window_overflow_gives_410(self):
        with FakeApiServer("--watch-window", "5") as s:
            self.srv = s
            try:
                first = self.fresh(EXAMPLES.replace("reference.test/v1/examples", "sublease.io/v1alpha1/ipblocks"),
                                   {"apiVersion": "sublease.io/v1alpha1", "kind": "IPBlock",
                                    "metadata": {"name": "b0"}, "spec": {}})
                for i in range(10):
                    self.req("POST", "/apis/sublease.io/v1alpha1/ipblocks",
                             {"apiVersion": "sublease.io/v1alpha1", "kind": "IPBlock",
                              "metadata": {"name": "b%d" % (i + 1)}, "spec": {}})
                w = s.watch("/apis/sublease.io/v1alpha1/ipblocks?watch=1&resourceVersion=%s"
                            % first["metadata"]["resourceVersion"])
                try:
                    ev = w.next_event()
                    self.assertEqual((ev["type"], ev["object"]["reason"]), ("ERROR", "Expired"))
                finally:
                    w.close()
            finally:
                self.srv = None

    def test_plain_http_and_sigterm_ends_watches(self):
        s = FakeApiServer(plain=True).start()
        try:
            self.assertTrue(s.info["url"].startswith("http://"))
            code, _, _ = s.request("GET", "/api/v1/pods")
            self.assertEqual(code, 200)
            w = s.watch("/api/v1/pods?watch=1&timeoutSeconds=60")
            time.sleep(0.2)
            t0 = time.monotonic()
            rc = s.stop()
            self.assertEqual(rc, 0)
            self.assertIsNone(w.next_event(), "the watch got its terminating chunk")
            self.assertLess(time.monotonic() - t0, 10)
            w.close()
        finally:
            s.cleanup()


# ---------------------------------------------------------------------------------------
# /openapi/v2: what kubectl <= 1.26 reads before apply and explain
# ---------------------------------------------------------------------------------------


class OpenApiV2Tests(Base):
    def test_v3_schema_becomes_what_kubectl_accepts(self):
        cases = [
            ({"type": "string", "description": "d"}, {"type": "string", "description": "d"}),
            ({"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
             {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}),
            # What v2 cannot say becomes an untyped value without properties.
            ({"type": "object", "x-kubernetes-preserve-unknown-fields": True,
              "properties": {"a": {"type": "string"}}}, {}),
            ({"type": "string", "nullable": True}, {}),
            ({"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}]}, {}),
            ({"type": "object"}, {}),
            ({"type": "array"}, {}),
            ({"type": "object", "additionalProperties": {"type": "string"}},
             {"type": "object", "additionalProperties": {"type": "string"}}),
            ({"type": "array", "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
             {"type": "array", "items": {}}),
        ]
        for v3, v2 in cases:
            self.assertEqual(openapi_v2.to_v2_schema(v3), v2, v3)

    def test_json_document_has_the_custom_resources(self):
        code, _, doc = self.req("GET", "/openapi/v2")
        self.assertEqual(code, 200)
        self.assertEqual(doc["swagger"], "2.0")
        subnet = doc["definitions"]["io.kubeovn.v1.Subnet"]
        self.assertEqual(subnet["x-kubernetes-group-version-kind"],
                         [{"group": "kubeovn.io", "version": "v1", "kind": "Subnet"}])
        spec = subnet["properties"]["spec"]
        self.assertEqual(spec["properties"]["cidrBlock"], {"type": "string"})
        self.assertEqual(spec["properties"]["excludeIps"],
                         {"type": "array", "items": {"type": "string"}})
        self.assertIn("metadata", subnet["properties"])  # added, as the API server does
        self.assertNotIn("io.k8s.api.core.v1.Pod", doc["definitions"])  # no schema in the fake

    def test_protobuf_document_decodes(self):
        code, hdrs, body = self.req("GET", "/openapi/v2", headers={"Accept": openapi_v2.PROTOBUF})
        self.assertEqual(code, 200)
        self.assertEqual(hdrs["content-type"], openapi_v2.PROTOBUF_REPLY)
        top = openapi_v2.decode_fields(body)
        self.assertEqual(top[1], [b"2.0"])
        names = {}
        for entry in openapi_v2.decode_fields(top[9][0])[1]:  # Definitions.additional_properties
            f = openapi_v2.decode_fields(entry)
            names[f[1][0].decode()] = openapi_v2.decode_fields(f[2][0])
        subnet = names["io.kubeovn.v1.Subnet"]
        self.assertEqual(openapi_v2.decode_fields(subnet[22][0])[1], [b"object"])  # type
        ext = openapi_v2.decode_fields(subnet[31][0])  # vendor_extension[0]
        self.assertEqual(ext[1], [b"x-kubernetes-group-version-kind"])
        self.assertEqual(json.loads(openapi_v2.decode_fields(ext[2][0])[2][0]),
                         [{"group": "kubeovn.io", "version": "v1", "kind": "Subnet"}])


# ---------------------------------------------------------------------------------------
# Realistic timing (docs/fake-apiserver.md, "Timing"): lower bounds on delays are what the
# fake guarantees; upper bounds are generous and only catch a hang.
# ---------------------------------------------------------------------------------------


class WatchReader(threading.Thread):
    """Reads a watch in the background and stamps each event with its arrival time, so a
    lower bound on delivery can be checked without depending on when the test looks."""

    def __init__(self, w, max_events=200):
        super().__init__(daemon=True)
        self.w = w
        self.max_events = max_events
        self.events = []   # (monotonic arrival, event)
        self.lock = threading.Lock()

    def run(self):
        try:
            for _ in range(self.max_events):
                ev = self.w.next_event()
                if ev is None:
                    return
                with self.lock:
                    self.events.append((time.monotonic(), ev))
        except (OSError, ValueError):
            return

    def snapshot(self):
        with self.lock:
            return list(self.events)

    def wait_for(self, pred, max_seconds=10.0):
        deadline = time.monotonic() + max_seconds
        while time.monotonic() < deadline:
            evs = self.snapshot()
            if pred(evs):
                return evs
            time.sleep(0.01)
        return self.snapshot()


def rv_of(obj):
    return int(obj["metadata"]["resourceVersion"])


# The tests' own User-Agent (fakeapi-test/) is exempt from random 429/500 by default.
FAULTED = {"User-Agent": "timing-test/1.0"}


class TimingTests(Base):
    def setUp(self):
        self.assertEqual(self.s.ctl("DELETE", "/timing")[0], 200)

    def tearDown(self):
        self.s.ctl("DELETE", "/timing")

    def timing(self, **body):
        code, out = self.s.ctl("POST", "/timing", body)
        self.assertEqual(code, 200, out)
        return out

    def current_rv(self):
        code, _, lst = self.req("GET", EXAMPLES)
        self.assertEqual(code, 200)
        return lst["metadata"]["resourceVersion"]

    def test_timing_watch_events_arrive_late_but_in_order(self):
        for i in range(5):
            self.ensure_gone(EXAMPLES + "/late-%d" % i)
        self.timing(watch_delay_ms={"examples": "200-400", "*": "0-10"}, seed=5)
        w = self.s.watch(EXAMPLES + "?watch=1&timeoutSeconds=20&resourceVersion=" + self.current_rv())
        reader = WatchReader(w)
        reader.start()
        try:
            sent = {}
            for i in range(5):
                name = "late-%d" % i
                sent[name] = time.monotonic()
                code, _, body = self.req("POST", EXAMPLES, example(name, "late-node"))
                self.assertEqual(code, 201, body)
            evs = reader.wait_for(lambda evs: len(evs) >= 5)
            self.assertEqual([e["object"]["metadata"]["name"] for _, e in evs],
                             ["late-%d" % i for i in range(5)], "in commit order")
            rvs = [rv_of(e["object"]) for _, e in evs]
            self.assertEqual(rvs, sorted(rvs))
            for at, e in evs:
                name = e["object"]["metadata"]["name"]
                # commit happened after the request was sent: arrival >= sent + 200 ms
                self.assertGreaterEqual(at - sent[name], 0.2, name)
        finally:
            w.close()

    def test_timing_get_after_a_write_sees_it_before_the_watch_does(self):
        self.ensure_gone(EXAMPLES + "/quorum-read")
        self.timing(watch_delay_ms={"examples": "1000-1000"})
        w = self.s.watch(EXAMPLES + "?watch=1&timeoutSeconds=20&resourceVersion=" + self.current_rv())
        reader = WatchReader(w)
        reader.start()
        try:
            t0 = time.monotonic()
            code, _, created = self.req("POST", EXAMPLES, example("quorum-read", "q-node"))
            self.assertEqual(code, 201)
            code, _, got = self.req("GET", EXAMPLES + "/quorum-read")
            t_get = time.monotonic()
            self.assertEqual(code, 200, "a consistent GET is never delayed")
            self.assertEqual(got["metadata"]["uid"], created["metadata"]["uid"])
            code, _, lst = self.req("GET", EXAMPLES)
            self.assertIn("quorum-read", [o["metadata"]["name"] for o in lst["items"]])
            evs = reader.wait_for(lambda evs: len(evs) >= 1)
            self.assertEqual(len(evs), 1)
            self.assertGreaterEqual(evs[0][0] - t0, 1.0)
            # generous bound: a loopback GET takes far less than the 1 s delay
            self.assertLess(t_get, evs[0][0], "the GET answered before the watch delivered")
        finally:
            w.close()

    def test_timing_bookmarks_never_pass_an_undelivered_event(self):
        self.ensure_gone(EXAMPLES + "/bm-late")
        self.timing(watch_delay_ms={"examples": "1500-1500"})
        w = self.s.watch(EXAMPLES + "?watch=1&allowWatchBookmarks=true&timeoutSeconds=20"
                         "&resourceVersion=" + self.current_rv())
        reader = WatchReader(w)
        reader.start()
        try:
            code, _, created = self.req("POST", EXAMPLES, example("bm-late", "bm-node"))
            self.assertEqual(code, 201)
            rv = rv_of(created)
            evs = reader.wait_for(lambda evs: any(e["type"] == "ADDED" for _, e in evs)
                                  and is_bm(evs[-1][1]) and rv_of(evs[-1][1]["object"]) >= rv)
            types = [e["type"] for _, e in evs]
            added = types.index("ADDED")
            before = [rv_of(e["object"]) for _, e in evs[:added] if is_bm(e)]
            self.assertTrue(before, "bookmarks (0.3 s interval) came during the 1.5 s delay: %s" % types)
            self.assertTrue(all(b < rv for b in before), (before, rv))
            self.assertGreaterEqual(rv_of(evs[-1][1]["object"]), rv)
        finally:
            w.close()

    def test_timing_rv0_list_is_served_from_a_lagging_cache(self):
        self.ensure_gone(EXAMPLES + "/cache-lag")
        self.timing(watch_delay_ms={"examples": "1500-1500"})
        code, _, created = self.req("POST", EXAMPLES, example("cache-lag", "c-node"))
        self.assertEqual(code, 201)
        code, _, cached = self.req("GET", EXAMPLES + "?resourceVersion=0")
        self.assertEqual(code, 200)
        self.assertNotIn("cache-lag", [o["metadata"]["name"] for o in cached["items"]])
        self.assertLess(int(cached["metadata"]["resourceVersion"]), rv_of(created))
        code, _, fresh = self.req("GET", EXAMPLES)
        self.assertIn("cache-lag", [o["metadata"]["name"] for o in fresh["items"]])
        names = []
        for _ in range(100):   # 5 s at most
            names = [o["metadata"]["name"] for o in self.req("GET", EXAMPLES + "?resourceVersion=0")[2]["items"]]
            if "cache-lag" in names:
                break
            time.sleep(0.05)
        self.assertIn("cache-lag", names)

    def test_timing_writes_are_serialized(self):
        n = 8
        for i in range(n):
            self.ensure_gone(EXAMPLES + "/serial-%d" % i)
        self.timing(write_latency_ms="50-60")
        results, threads = {}, []

        def create(i):
            t = time.monotonic()
            code, _, _ = self.req("POST", EXAMPLES, example("serial-%d" % i, "s-node"))
            results[i] = (code, time.monotonic() - t)

        t0 = time.monotonic()
        for i in range(n):
            th = threading.Thread(target=create, args=(i,))
            th.start()
            threads.append(th)
        for th in threads:
            th.join(30)
        elapsed = time.monotonic() - t0
        self.assertEqual(sorted(c for c, _ in results.values()), [201] * n)
        self.assertTrue(all(d >= 0.05 for _, d in results.values()), results)
        self.assertGreaterEqual(elapsed, n * 0.05, "one write at a time")
        self.assertLess(elapsed, 20)
        # reads do not wait for the commit timeline
        self.timing(write_latency_ms="2000-2000")
        th = threading.Thread(target=create, args=(99,))
        self.ensure_gone(EXAMPLES + "/serial-99")
        th.start()
        time.sleep(0.2)
        t = time.monotonic()
        code, _, _ = self.req("GET", EXAMPLES + "/serial-0")
        self.assertEqual(code, 200)
        self.assertLess(time.monotonic() - t, 1.5)
        code, _, _ = self.req("GET", EXAMPLES + "/serial-99")
        self.assertEqual(code, 404, "not committed before its latency has passed")
        th.join(30)
        self.assertEqual(results[99][0], 201)
        self.assertGreaterEqual(results[99][1], 2.0)

    def test_timing_a_stale_update_is_refused_before_the_commit(self):
        # As the API server's GuaranteedUpdate: a resourceVersion that is not the object's
        # fails its precondition without an etcd transaction, so it waits for no commit.
        self.ensure_gone(EXAMPLES + "/stale-1")
        code, _, created = self.req("POST", EXAMPLES, example("stale-1", "s-node"))
        self.assertEqual(code, 201)
        code, _, current = self.req("PUT", EXAMPLES + "/stale-1", dict(created, spec=dict(created["spec"], node="s-node-2")))
        self.assertEqual(code, 200)
        self.timing(write_latency_ms="1500-1500")
        writes = self.timing()["counts"]["writes"]
        t = time.monotonic()
        code, _, body = self.req("PUT", EXAMPLES + "/stale-1", dict(created, spec=dict(created["spec"], node="s-node-3")))
        self.assertEqual((code, body.get("reason")), (409, "Conflict"))
        self.assertLess(time.monotonic() - t, 1.4, "a stale update does not wait for a commit")
        self.assertEqual(self.timing()["counts"]["writes"], writes, "and costs none")
        # A current one pays its commit.
        t = time.monotonic()
        code, _, _ = self.req("PUT", EXAMPLES + "/stale-1", dict(current, spec=dict(current["spec"], node="s-node-3")))
        self.assertEqual(code, 200)
        self.assertGreaterEqual(time.monotonic() - t, 1.5)
        self.assertEqual(self.timing()["counts"]["writes"], writes + 1)

    def test_timing_throttle_rate_and_retry_after(self):
        self.timing(throttle_rate=0.25, throttle_retry_after=2, seed=11)
        codes = []
        for _ in range(200):
            code, hdrs, body = self.req("GET", EXAMPLES + "?limit=1", headers=FAULTED)
            codes.append(code)
            if code == 429:
                self.assertEqual(hdrs.get("retry-after"), "2")
                self.assertEqual(body["reason"], "TooManyRequests")
                self.assertEqual(body["details"]["retryAfterSeconds"], 2)
                self.assertIn("x-kubernetes-pf-flowschema-uid", hdrs)
            else:
                self.assertEqual(code, 200, body)
        n = codes.count(429)
        self.assertTrue(25 <= n <= 80, "about 25%% of 200: %d" % n)
        self.assertEqual(self.s.ctl("GET", "/timing")[1]["counts"]["throttled"], n)
        # Watches, the control port and /_fake on the API port are never throttled.
        self.timing(throttle_rate=1.0)
        for _ in range(5):
            w = self.s.watch(EXAMPLES + "?watch=1&timeoutSeconds=1&resourceVersion=" + str(10 ** 9 - 1))
            self.assertEqual(w.status, 200)
            w.close()
        self.assertEqual(self.s.ctl("GET", "/state")[0], 200)
        self.assertEqual(self.req("GET", "/_fake/state", headers=FAULTED)[0], 200)
        self.assertEqual(self.req("GET", "/version", headers=FAULTED)[0], 200)
        self.assertEqual(self.req("GET", EXAMPLES, headers=FAULTED)[0], 429)
        self.assertEqual(self.req("GET", EXAMPLES)[0], 200, "the test driver is exempt")
        self.timing(exempt_user_agents=[])
        self.assertEqual(self.req("GET", EXAMPLES)[0], 429, "unless told otherwise")

    def test_timing_error_rate_on_reads(self):
        self.timing(error_rate=0.2, seed=3)
        codes = []
        for _ in range(200):
            code, hdrs, body = self.req("GET", EXAMPLES + "?limit=1", headers=FAULTED)
            codes.append(code)
            if code == 500:
                self.assertEqual(body["reason"], "InternalError")
                self.assertNotIn("retry-after", hdrs)
        n = codes.count(500)
        self.assertTrue(15 <= n <= 70, "about 20%% of 200: %d" % n)
        self.assertEqual(codes.count(200), 200 - n)

    def test_timing_error_write_phase(self):
        for phase, applied in (("before", False), ("after", True)):
            self.ensure_gone(EXAMPLES + "/err-" + phase)
            self.timing(error_rate=1.0, error_write_phase=phase)
            code, _, body = self.req("POST", EXAMPLES, example("err-" + phase, "e-node"),
                                     headers=FAULTED)
            self.assertEqual(code, 500, body)
            self.assertEqual(body["reason"], "InternalError")
            self.timing(error_rate=0.0)
            code, _, _ = self.req("GET", EXAMPLES + "/err-" + phase)
            self.assertEqual(code, 200 if applied else 404, phase)
        self.timing(error_rate=1.0, error_write_phase="random", seed=21)
        for i in range(20):
            self.ensure_gone(EXAMPLES + "/err-r%d" % i)
            self.req("POST", EXAMPLES, example("err-r%d" % i, "e-node"), headers=FAULTED)
        self.timing(error_rate=0.0)
        there = [self.req("GET", EXAMPLES + "/err-r%d" % i)[0] == 200 for i in range(20)]
        self.assertTrue(any(there) and not all(there), there)

    def test_timing_control_api_validates_and_deletes(self):
        code, out = self.s.ctl("POST", "/timing", {"watch_delay_ms": "pods=5-1"})
        self.assertEqual(code, 400, out)
        code, out = self.s.ctl("POST", "/timing", {"throttle_rate": 2})
        self.assertEqual(code, 400, out)
        code, out = self.s.ctl("POST", "/timing", {"bogus": 1})
        self.assertEqual(code, 400, out)
        out = self.timing(preset="realistic", error_rate=0, seed=99)
        self.assertEqual(out["watch_delay_ms"]["pods"], [5.0, 250.0])
        self.assertEqual(out["error_rate"], 0.0)
        self.assertEqual(out["seed"], 99)
        code, out = self.s.ctl("DELETE", "/timing")
        self.assertEqual((out["watch_delay_ms"], out["throttle_rate"], out["write_latency_ms"]),
                         ({}, 0.0, [0.0, 0.0]))

    def test_timing_from_environment_and_flags(self):
        env = {"FAKEAPI_TIMING": "realistic", "FAKEAPI_TIMING_SEED": "1234",
               "FAKEAPI_WATCH_DELAY_MS": "pods=100-500,ipblocks=0-200,*=0-50",
               "FAKEAPI_THROTTLE_RATE": "0.05", "FAKEAPI_ERROR_RATE": None}
        s = FakeApiServer("--error-rate", "0", "--write-latency-ms", "3-4", env=env).start()
        try:
            code, t = s.ctl("GET", "/timing")
            self.assertEqual(code, 200)
            self.assertEqual(t["seed"], 1234)
            self.assertEqual(t["watch_delay_ms"], {"*": [0.0, 50.0], "ipblocks": [0.0, 200.0],
                                                   "pods": [100.0, 500.0]})
            self.assertEqual(t["throttle_rate"], 0.05)        # the variable beats the preset
            self.assertEqual(t["error_rate"], 0.0)            # the flag beats the preset
            self.assertEqual(t["write_latency_ms"], [3.0, 4.0])
            self.assertEqual(t["error_write_phase"], "random")  # from the preset
            self.assertEqual(s.info["timing"]["seed"], 1234)
            self.assertIn("timing seed 1234", s.log())
        finally:
            s.cleanup()
        bad = FakeApiServer("--watch-delay-ms", "pods=abc")
        with self.assertRaises(RuntimeError) as e:
            bad.start()
        bad.cleanup()
        self.assertIn("watch delay of pods", str(e.exception))

    def test_timing_watch_that_was_bookmarked_to_the_present_survives_compaction(self):
        # The delivery queue must not forget how far a bookmark took a quiet watch: after a
        # compaction at the current version it goes on, as before timing existed.
        s = FakeApiServer("--bookmark-interval", "0.2").start()
        try:
            rv = s.request("GET", PODS)[2]["metadata"]["resourceVersion"]
            s.request("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                     "metadata": {"name": "other"}})
            w = s.watch("/api/v1/namespaces/default/pods?watch=1&allowWatchBookmarks=true"
                        "&timeoutSeconds=10&resourceVersion=" + rv)
            try:
                code, _, ns = s.request("GET", "/api/v1/namespaces/other")
                now = rv_of(ns)
                evs = w.events_until(lambda evs: is_bm(evs[-1]) and rv_of(evs[-1]["object"]) >= now,
                                     max_seconds=5)
                self.assertTrue(evs and rv_of(evs[-1]["object"]) >= now, evs)
                self.assertEqual(s.ctl("POST", "/compact")[0], 200)
                code, _, _ = s.request("POST", PODS, pod("after-compaction"))
                self.assertEqual(code, 201)
                evs = w.events_until(lambda evs: evs[-1]["type"] != "BOOKMARK", max_seconds=5)
                self.assertEqual(evs[-1]["type"], "ADDED", evs)
            finally:
                w.close()
        finally:
            s.cleanup()

    def test_timing_is_off_by_default(self):
        s = FakeApiServer(env={k: None for k in ("FAKEAPI_TIMING", "FAKEAPI_WATCH_DELAY_MS",
                                                 "FAKEAPI_WRITE_LATENCY_MS", "FAKEAPI_THROTTLE_RATE",
                                                 "FAKEAPI_ERROR_RATE")}).start()
        try:
            t = s.ctl("GET", "/timing")[1]
            self.assertEqual((t["watch_delay_ms"], t["write_latency_ms"], t["throttle_rate"],
                              t["error_rate"]), ({}, [0.0, 0.0], 0.0, 0.0))
            self.assertIsInstance(t["seed"], int)
            self.assertIn("timing seed %d" % t["seed"], s.log())
        finally:
            s.cleanup()


# ---------------------------------------------------------------------------------------
# kubectl against the fake
# ---------------------------------------------------------------------------------------


# kubectl ships with this kind of machine; a missing kubectl fails the test (no silent skip).
class KubectlTests(Base):
    def kubectl(self, *args, stdin=None):
        self.assertIsNotNone(shutil.which("kubectl"), "kubectl is not on PATH")
        r = subprocess.run(["kubectl", "--kubeconfig", self.s.info["kubeconfig"]] + list(args),
                           input=stdin, capture_output=True, text=True, timeout=60)
        return r.returncode, r.stdout, r.stderr

    def test_kubectl_smoke(self):
        manifest = ("apiVersion: kubeovn.io/v1\nkind: Subnet\nmetadata:\n  name: kubectl-subnet\n"
                    "spec:\n  protocol: IPv4\n  provider: macvlan.default\n  cidrBlock: 172.18.0.0/16\n"
                    "  gateway: 172.18.0.1\n  excludeIps:\n  - 172.18.0.0..172.18.0.10\n")
        self.ensure_gone(SUBNETS + "/kubectl-subnet")
        rc, out, err = self.kubectl("apply", "-f", "-", stdin=manifest)
        self.assertEqual(rc, 0, err)
        self.assertIn("subnet.kubeovn.io/kubectl-subnet created", out)
        rc, out, err = self.kubectl("apply", "-f", "-", stdin=manifest.replace("172.18.0.1\n", "172.18.0.2\n"))
        self.assertEqual(rc, 0, err)
        self.assertIn("configured", out)
        rc, out, err = self.kubectl("get", "subnets")
        self.assertEqual(rc, 0, err)
        self.assertIn("kubectl-subnet", out)
        self.assertIn("PROVIDER", out)           # printer columns via the Table
        rc, out, err = self.kubectl("apply", "-f", "-", stdin=manifest.replace("IPv4", "IPv5"))
        self.assertNotEqual(rc, 0)
        self.assertIn("Unsupported value", err)
        rc, out, err = self.kubectl("describe", "subnet", "kubectl-subnet")
        self.assertEqual(rc, 0, err)
        self.assertIn("172.18.0.2", out)
        self.fresh(PODS, pod("kubectl-pod-a", "kubectl-node-a"))
        self.fresh(PODS, pod("kubectl-pod-b", "kubectl-node-b"))
        rc, out, err = self.kubectl("get", "pods", "--field-selector", "spec.nodeName=kubectl-node-a")
        self.assertEqual(rc, 0, err)
        self.assertIn("kubectl-pod-a", out)
        self.assertNotIn("kubectl-pod-b", out)
        rc, out, err = self.kubectl("get", "ipblocks")
        self.assertEqual(rc, 0, err)
        # explain reads /openapi/v2 (kubectl <= 1.26) or /openapi/v3 (later).
        rc, out, err = self.kubectl("explain", "subnets.spec")
        self.assertEqual(rc, 0, err)
        self.assertIn("cidrBlock", out)
        rc, out, err = self.kubectl("delete", "subnet", "kubectl-subnet")
        self.assertEqual(rc, 0, err)
        self.assertEqual(self.req("GET", SUBNETS + "/kubectl-subnet")[0], 404)
        rc, out, err = self.kubectl("delete", "pod", "kubectl-pod-a", "kubectl-pod-b",
                                    "--grace-period=0", "--force")
        self.assertEqual(rc, 0, err)
        self.assertEqual(self.req("GET", PODS + "/kubectl-pod-a")[0], 404)


if __name__ == "__main__":
    unittest.main()
