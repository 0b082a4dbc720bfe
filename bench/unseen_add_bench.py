#!/usr/bin/env python3
"""CNI ADD latency in cluster mode: a pod the node already knows vs one it has not seen
(BENCHMARKS.md §4c; issue 11).

One subleased daemon against the fake Kubernetes API server (TLS on loopback).
- known: the pod is bound, the node's watch delivers it, the node allocates ahead of
  time and writes the annotations; then the ADD (the `sublease` plugin, exec'd as a
  runtime would) is answered from SQLite.
- unseen: the node's pod list/watch is cut (every `/api/v1/pods?...` answers 500), so
  the ADD comes for a pod the node has never seen: it reads the pod (one GET), then
  allocates (one IPBlock write), then answers.
Reports p50/p90/max of the ADD's wall time (fork+exec of the plugin included) per path,
and the API requests the unseen path made per ADD. Timing never decides the exit code;
a wrong or failed ADD does.

    python3 bench/unseen_add_bench.py [--pods N] [--write-latency-ms A-B] [--json FILE]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import shutil

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "fakeapi"))
from fakeapi_client import FakeApiServer  # noqa: E402

BIN = os.environ.get("SUBLEASE_BIN") or os.path.join(ROOT, "build", "bin")
PODS = "/api/v1/namespaces/default/pods"
P = "bench.default"


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pods", type=int, default=200)
    ap.add_argument("--write-latency-ms", default="", help="the fake's etcd commit latency, e.g. 2-5")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="sublease-unseen-bench-")
    os.makedirs(os.path.join(work, "api"))
    api = FakeApiServer("--pod-grace-scale", "0", state_dir=os.path.join(work, "api")).start()
    daemon = None
    try:
        if args.write_latency_ms:
            lo, hi = (int(x) for x in args.write_latency_ms.split("-"))
            status, body = api.ctl("POST", "/timing", {"write_latency_ms": [lo, hi]})
            if status not in (200, 201):
                raise SystemExit("the fake API server does not take /_fake/timing: %s" % body)
        sock = os.path.join(work, "node.sock")
        logf = open(os.path.join(work, "node.log"), "ab")
        daemon = subprocess.Popen([os.path.join(BIN, "subleased"), "--kubeconfig", api.info["kubeconfig"],
                                   "--node-name", "node-a", "--socket", sock, "--db", os.path.join(work, "node.db"),
                                   "--metrics-address", "", "--log-level", "warn"], stdout=logf, stderr=logf)
        api.request("POST", "/apis/kubeovn.io/v1/subnets", {
            "apiVersion": "kubeovn.io/v1", "kind": "Subnet", "metadata": {"name": "bench"},
            "spec": {"provider": P, "cidrBlock": "10.60.0.0/16", "protocol": "IPv4"}}, timeout=30)

        def cni(name, uid, command="ADD"):
            conf = {"cniVersion": "1.0.0", "name": "bench", "type": "macvlan",
                    "ipam": {"type": "kube-ovn", "server_socket": sock, "provider": P}}
            env = dict(os.environ, CNI_COMMAND=command, CNI_CONTAINERID="sb-" + name, CNI_NETNS="/proc/self/ns/net",
                       CNI_IFNAME="net1", CNI_PATH=BIN,
                       CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=%s;K8S_POD_UID=%s" % (name, uid))
            t0 = time.perf_counter()
            r = subprocess.run([os.path.join(BIN, "sublease")], input=json.dumps(conf), capture_output=True,
                               text=True, env=env, timeout=60)
            return time.perf_counter() - t0, r.returncode, json.loads(r.stdout) if r.stdout.strip() else {}

        def create(name, bound):
            spec = {"containers": [{"name": "c", "image": "alpine"}]}
            if bound:
                spec["nodeName"] = "node-a"
            status, _, obj = api.request("POST", PODS, {
                "apiVersion": "v1", "kind": "Pod", "spec": spec,
                "metadata": {"name": name, "namespace": "default",
                             "annotations": {"k8s.v1.cni.cncf.io/networks": "bench"}}}, timeout=30)
            assert status == 201, obj
            return obj["metadata"]["uid"]

        deadline = time.monotonic() + 60
        while "no Subnet" in json.dumps(cni("probe", "x", "CHECK")[2]):
            if time.monotonic() > deadline:
                raise SystemExit("the daemon never served the Subnet")
            time.sleep(0.1)
        # Known: allocated ahead of time, then the ADD.
        known = []
        for i in range(args.pods):
            name = "known-%d" % i
            uid = create(name, True)
            key = P + ".kubernetes.io/allocated"
            for _ in range(600):
                _, _, obj = api.request("GET", PODS + "/" + name, timeout=30)
                if obj["metadata"].get("annotations", {}).get(key) == "true":
                    break
                time.sleep(0.01)
            else:
                raise SystemExit(name + " was never allocated ahead of time")
            dt, rc, out = cni(name, uid)
            if rc != 0:
                raise SystemExit("%s: %s" % (name, out))
            known.append(dt * 1000)
        # Unseen: the node's pod feed is cut; each ADD reads its pod.
        api.ctl("POST", "/faults", {"path_prefix": "/api/v1/pods", "count": -1, "status": 500})
        api.ctl("POST", "/drop-watches", {"mode": "abort"})
        _, log0 = api.ctl("GET", "/requests")
        since = log0["last"]
        unseen = []
        for i in range(args.pods):
            name = "unseen-%d" % i
            uid = create(name, False)
            status, _, obj = api.request("POST", PODS + "/" + name + "/binding", {
                "apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
                "target": {"apiVersion": "v1", "kind": "Node", "name": "node-a"}}, timeout=30)
            assert status == 201, obj
            dt, rc, out = cni(name, uid)
            if rc != 0:
                raise SystemExit("%s: %s" % (name, out))
            unseen.append(dt * 1000)
        _, log1 = api.ctl("GET", "/requests?since=%d" % since)
        by = {}
        for r in log1["requests"]:
            if (r.get("user_agent") or "").startswith("subleased"):
                k = "%s %s" % (r["verb"], r["resource"])
                by[k] = by.get(k, 0) + 1
        result = {"pods": args.pods, "write_latency_ms": args.write_latency_ms or "0",
                  "known_ms": {"p50": pct(known, 0.5), "p90": pct(known, 0.9), "max": max(known),
                               "mean": statistics.mean(known)},
                  "unseen_ms": {"p50": pct(unseen, 0.5), "p90": pct(unseen, 0.9), "max": max(unseen),
                                "mean": statistics.mean(unseen)},
                  "unseen_requests_per_add": {k: v / args.pods for k, v in sorted(by.items())}}
        for path in ("known", "unseen"):
            r = result[path + "_ms"]
            print("%-7s ADD  p50 %6.2f ms  p90 %6.2f ms  max %6.2f ms  (%d pods)"
                  % (path, r["p50"], r["p90"], r["max"], args.pods))
        print("unseen: daemon API requests per ADD: %s" % json.dumps(result["unseen_requests_per_add"]))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=1)
    finally:
        if daemon:
            daemon.terminate()
            try:
                daemon.wait(timeout=15)
            except subprocess.TimeoutExpired:
                daemon.kill()
        api.cleanup()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
