"""packaging/kubernetes: every manifest parses, `kubectl kustomize` renders, and the
DaemonSet has what a node-critical CNI agent needs (issue 6). Also the examples parse.
Run: python3 -m unittest tests/packaging/test_manifests.py -v   (needs kubectl, python3-yaml)
"""
import glob
import os
import shutil
import subprocess
import tempfile
import unittest

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
K8S = os.path.join(ROOT, "packaging", "kubernetes")


def render(k8s=K8S):
    r = subprocess.run(["kubectl", "kustomize", k8s], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise AssertionError("kubectl kustomize failed: " + r.stderr)
    return [d for d in yaml.safe_load_all(r.stdout) if d]


def find(docs, kind, name=None):
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    if len(found) != 1:
        raise AssertionError("expected one %s %s, found %d" % (kind, name or "", len(found)))
    return found[0]


class Manifests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.docs = render()

    def test_every_yaml_file_parses_and_names_kind_and_api_version(self):
        files = glob.glob(os.path.join(ROOT, "packaging", "**", "*.yaml"), recursive=True)
        self.assertGreaterEqual(len(files), 8, files)
        for f in files:
            with open(f) as fh:
                docs = [d for d in yaml.safe_load_all(fh) if d]
            self.assertTrue(docs, f)
            for d in docs:
                if os.path.basename(f) in ("subleased.yaml", "cni-bin-dir.yaml"):
                    continue  # the daemon's own config; a JSON patch of the DaemonSet
                self.assertIn("kind", d, f)
                self.assertIn("apiVersion", d, f)

    def test_kustomization_renders_all_objects(self):
        kinds = sorted(d["kind"] for d in self.docs)
        self.assertEqual(kinds, sorted(["CustomResourceDefinition", "CustomResourceDefinition",
                                        "CustomResourceDefinition", "CustomResourceDefinition",
                                        "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
                                        "Role", "RoleBinding", "ConfigMap", "DaemonSet"]))

    def test_rbac_has_no_wildcards(self):
        for kind in ("ClusterRole", "Role"):
            for rule in find(self.docs, kind)["rules"]:
                for key in ("verbs", "resources", "apiGroups"):
                    self.assertNotIn("*", rule[key], "%s rule %s" % (kind, rule))

    def test_bindings_name_the_daemonsets_service_account(self):
        ds = find(self.docs, "DaemonSet", "sublease")
        sa = find(self.docs, "ServiceAccount")
        self.assertEqual(ds["spec"]["template"]["spec"]["serviceAccountName"], sa["metadata"]["name"])
        for kind in ("ClusterRoleBinding", "RoleBinding"):
            subj = find(self.docs, kind)["subjects"]
            self.assertEqual(subj, [{"kind": "ServiceAccount", "name": sa["metadata"]["name"],
                                     "namespace": sa["metadata"]["namespace"]}])
        self.assertEqual(find(self.docs, "Role")["metadata"]["namespace"], ds["metadata"]["namespace"])

    def test_daemonset_is_a_node_critical_agent(self):
        ds = find(self.docs, "DaemonSet", "sublease")
        spec = ds["spec"]
        pod = spec["template"]["spec"]
        self.assertTrue(pod["hostNetwork"])
        self.assertEqual(pod["priorityClassName"], "system-node-critical")
        self.assertIn({"operator": "Exists"}, pod["tolerations"])
        self.assertEqual(spec["updateStrategy"]["rollingUpdate"], {"maxUnavailable": 1, "maxSurge": 0})
        c = pod["containers"][0]
        env = {e["name"]: e for e in c["env"]}
        self.assertEqual(env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"], "spec.nodeName")
        self.assertEqual(c["livenessProbe"]["httpGet"]["path"], "/healthz")
        self.assertEqual(c["readinessProbe"]["httpGet"]["path"], "/readyz")
        self.assertIn("cpu", c["resources"]["requests"])
        self.assertIn("memory", c["resources"]["requests"])
        paths = {v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
        self.assertEqual(paths, {"/run/sublease", "/run/openvswitch", "/var/lib/sublease", "/opt/cni/bin"})
        init = pod["initContainers"][0]
        self.assertIn("install-cni.sh", " ".join(init["command"]))
        # Probes reach the metrics listener: same port as the config's metrics-address.
        cm = find(self.docs, "ConfigMap")
        config = yaml.safe_load(cm["data"]["subleased.yaml"])
        self.assertEqual(config["metrics-address"].split(":")[1], str(c["livenessProbe"]["httpGet"]["port"]))
        cm_name = cm["metadata"]["name"]
        self.assertIn(cm_name, [v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v])

    def test_cni_bin_dir_is_one_setting(self):
        with tempfile.TemporaryDirectory() as d:
            k8s = os.path.join(d, "kubernetes")
            shutil.copytree(K8S, k8s)
            patch = os.path.join(k8s, "cni-bin-dir.yaml")
            text = open(patch).read()
            self.assertIn("value: /opt/cni/bin\n", text)
            with open(patch, "w") as fh:
                fh.write(text.replace("value: /opt/cni/bin\n", "value: /var/lib/rancher/k3s/data/current/bin\n"))
            ds = find(render(k8s), "DaemonSet")
        vols = {v["name"]: v for v in ds["spec"]["template"]["spec"]["volumes"]}
        self.assertEqual(vols["cni-bin"]["hostPath"]["path"], "/var/lib/rancher/k3s/data/current/bin")

    def test_config_map_keys_are_daemon_options(self):
        # subleased refuses unknown keys; the keys it knows are in daemon/config.cc.
        with open(os.path.join(ROOT, "daemon", "config.cc")) as f:
            source = f.read()
        config = yaml.safe_load(find(self.docs, "ConfigMap")["data"]["subleased.yaml"])
        for key in config:
            self.assertIn('key == "%s"' % key, source, key)

    def test_install_cni_script_installs_both_names_and_spares_a_foreign_kube_ovn(self):
        script = os.path.join(ROOT, "packaging", "image", "install-cni.sh")
        with tempfile.TemporaryDirectory() as d:
            src_dir = os.path.join(d, "src")
            os.makedirs(src_dir)
            src = os.path.join(src_dir, "sublease")
            with open(src, "w") as f:
                f.write("#!/bin/sh\n# subleased plugin stand-in\n")
            text = open(script).read().replace("src=/usr/lib/cni/sublease", "src=" + src)
            local = os.path.join(d, "install-cni.sh")
            with open(local, "w") as f:
                f.write(text)
            dest = os.path.join(d, "bin")
            os.makedirs(dest)
            r = subprocess.run(["sh", local, dest], capture_output=True, text=True, timeout=30)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(sorted(os.listdir(dest)), ["kube-ovn", "sublease"])
            self.assertTrue(os.access(os.path.join(dest, "kube-ovn"), os.X_OK))
            with open(os.path.join(dest, "kube-ovn"), "w") as f:
                f.write("kube-ovn's own plugin\n")
            r = subprocess.run(["sh", local, dest], capture_output=True, text=True, timeout=30)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("belongs to another plugin", r.stderr)
            self.assertEqual(open(os.path.join(dest, "kube-ovn")).read(), "kube-ovn's own plugin\n")


if __name__ == "__main__":
    unittest.main()
