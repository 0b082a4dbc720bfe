#!/usr/bin/env python3
"""The leader's cost with a large cluster's state (issue 14, BENCHMARKS.md §7): one
`subleased` against the fake API server pre-loaded with --pods pods (on 100 other nodes)
and --blocks IPBlocks holding one allocation per pod, in one Subnet.

The objects are written straight into the fake's --persist snapshot (creating 100k pods
through the Python server would take minutes), then the fake starts from it and the
daemon starts as the only one, so it becomes the leader and watches every pod and every
block (its cluster duties). Reported: time until the Subnet status counts every
allocation (the leader has listed everything and computed), the leader's CPU for that,
its CPU per second in the steady state that follows (garbage-collection sweeps over every
allocation, nothing changing), and its RSS.

Then, with --churn R, pods churn for --churn-seconds: R pods/s are created (bound to a
node no daemon runs on), get an allocation in one of a few churn blocks, and are deleted
--lifetime seconds later (allocation removed first, as a node's CNI DEL does, then the
pod). The leader watches every one of those changes: its CPU per second over the churn
and its RSS after are reported.

    python3 bench/leader_scale.py [--pods 100000] [--blocks 5000] [--steady 30] [--churn 20]
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "fakeapi"))
from cluster_bench import BIN, SUBNETS, cpu_s, loadavg, log, subnet  # noqa: E402
from fakeapi_client import FakeApiServer  # noqa: E402
from scale_model import rss_mib  # noqa: E402

TS = "2026-12-03T00:00:00Z"


def churn(api, proc, args):
    """R pods/s through create → allocation in a churn block → (lifetime) → allocation
    removed → pod deleted, as nodes without a daemon here would; the leader's CPU over it."""
    per_block = 50
    n_blocks = int(args.churn * args.lifetime / per_block) + 2
    blocks = []
    for k in range(n_blocks):
        first = (args.blocks + k) * 64
        cidr = "10.%d.%d.%d/26" % ((first >> 16) & 255, (first >> 8) & 255, first & 255)
        name = "big.%08x-26" % (0x0A000000 + first)
        obj = {"apiVersion": "sublease.io/v1alpha1", "kind": "IPBlock", "metadata": {
            "name": name, "labels": {"sublease.io/subnet": "big", "sublease.io/node": "node-churn"}},
            "spec": {"subnet": "big", "cidr": cidr, "node": "node-churn", "allocations": {}}}
        st, _, got = api.request("POST", "/apis/sublease.io/v1alpha1/ipblocks", obj, timeout=60)
        assert st == 201, (st, got)
        blocks.append({"obj": got, "free": list(range(2, 2 + per_block)), "first": first})

    def put(b, change):
        for _ in range(20):  # 409: the leader's collection wrote meanwhile; re-read and retry
            change(b["obj"]["spec"].setdefault("allocations", {}))
            st, _, got = api.request("PUT", "/apis/sublease.io/v1alpha1/ipblocks/" + b["obj"]["metadata"]["name"],
                                     b["obj"], timeout=60)
            if st == 200:
                b["obj"] = got
                return
            st, _, got = api.request("GET", "/apis/sublease.io/v1alpha1/ipblocks/" + b["obj"]["metadata"]["name"],
                                     timeout=60)
            b["obj"] = got
        raise RuntimeError("could not write churn block")

    live = []  # (due, name, block index, offset)
    made = gone = 0
    cpu0, t0 = cpu_s(proc.pid), time.monotonic()
    end = t0 + args.churn_seconds
    next_create = t0
    while time.monotonic() < end or live:
        now = time.monotonic()
        if live and live[0][0] <= now:
            _, name, bi, off = live.pop(0)
            b = blocks[bi]
            put(b, lambda a, off=off: a.pop(str(off), None))
            api.request("DELETE", "/api/v1/namespaces/default/pods/" + name + "?gracePeriodSeconds=0", timeout=60)
            b["free"].append(off)
            gone += 1
            continue
        if now < end and now >= next_create:
            bi = made % len(blocks)
            b = blocks[bi]
            off = b["free"].pop(0)
            name = "churn-%06d" % made
            pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {
                "name": name, "namespace": "default",
                "annotations": {"k8s.v1.cni.cncf.io/networks": "big"}},
                "spec": {"nodeName": "node-churn", "containers": [{"name": "c", "image": "registry.example/app:1.0"}]}}
            st, _, got = api.request("POST", "/api/v1/namespaces/default/pods", pod, timeout=60)
            assert st == 201, (st, got)
            uid = got["metadata"]["uid"]
            put(b, lambda a, off=off, name=name, uid=uid: a.__setitem__(str(off), {
                "namespace": "default", "pod": name, "podUID": uid, "interface": "net1", "containerID": "c" * 64,
                "node": "node-churn", "provider": "big.default", "sticky": False}))
            live.append((now + args.lifetime, name, bi, off))
            made += 1
            next_create += 1.0 / args.churn
            continue
        waits = ([next_create - now] if now < end else []) + ([live[0][0] - now] if live else [])
        time.sleep(min(0.01, max(0.0, min(waits))) if waits else 0.01)
    wall = time.monotonic() - t0
    cpu = cpu_s(proc.pid) - cpu0
    out = {"pods_per_s_target": args.churn, "pods_created": made, "pods_deleted": gone, "wall_s": round(wall, 1),
           "achieved_pods_per_s": round(made / args.churn_seconds, 2), "leader_cpu_s_per_s": round(cpu / wall, 4),
           "rss_mib": round(rss_mib(proc.pid), 1), "load": loadavg()}
    log("  churn: %d pods created and deleted over %.1f s (%.1f/s asked, %.1f/s made); leader CPU %.4f s/s, RSS %.1f MiB;"
        " load %s" % (made, wall, args.churn, out["achieved_pods_per_s"], out["leader_cpu_s_per_s"], out["rss_mib"],
                      out["load"]))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pods", type=int, default=100000)
    ap.add_argument("--blocks", type=int, default=5000)
    ap.add_argument("--steady", type=float, default=30.0)
    ap.add_argument("--churn", type=float, default=0.0, help="pods created and deleted per second after the steady phase")
    ap.add_argument("--churn-seconds", type=float, default=30.0)
    ap.add_argument("--lifetime", type=float, default=10.0, help="seconds a churned pod lives")
    ap.add_argument("--json")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    per_block = (args.pods + args.blocks - 1) // args.blocks
    assert per_block <= 60, "blocks of 64 addresses (a /12 Subnet): at most 60 allocations each"
    d = tempfile.mkdtemp(prefix="sublease-leader-")
    api_dir = os.path.join(d, "api")
    os.makedirs(api_dir)
    snap = os.path.join(d, "snapshot.json")
    log("== leader with %d pods in %d IPBlocks; load %s ==" % (args.pods, args.blocks, loadavg()))
    # 1. An empty server writes the base snapshot (namespaces, CRDs) and the Subnet.
    api = FakeApiServer("--persist", snap, "--pod-grace-scale", "0", state_dir=api_dir).start()
    st, _, obj = api.request("POST", SUBNETS, subnet("big", "big.default", "10.0.0.0/12"))
    assert st in (200, 201), obj
    api.ctl("POST", "/flush")
    api.cleanup()
    base = json.load(open(snap))
    rv = int(base["resourceVersion"])
    pods, blocks = [], []
    i = 0
    t = time.monotonic()
    for b in range(args.blocks):
        first = b * 64  # /26 blocks of 10.0.0.0/12
        node = "node-%03d" % (b % 100)
        allocs = {}
        for k in range(per_block):
            if i >= args.pods:
                break
            name = "app-%05d-%s" % (i // 10, "%05d" % i)
            uid = "00000000-0000-4000-8000-%012d" % i
            ip = "10.%d.%d.%d" % (((first + 2 + k) >> 16) & 255, ((first + 2 + k) >> 8) & 255, (first + 2 + k) & 255)
            rv += 1
            pods.append({"apiVersion": "v1", "kind": "Pod", "metadata": {
                "name": name, "namespace": "default", "uid": uid, "resourceVersion": str(rv),
                "creationTimestamp": TS, "labels": {"app": "app-%05d" % (i // 10)},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "app-%05d" % (i // 10),
                                     "uid": "rs-%05d" % (i // 10), "controller": True}],
                "annotations": {"k8s.v1.cni.cncf.io/networks": "big",
                                "big.default.kubernetes.io/ip_address": ip,
                                "big.default.kubernetes.io/cidr": "10.0.0.0/12",
                                "big.default.kubernetes.io/gateway": "10.0.0.1",
                                "big.default.kubernetes.io/allocated": "true"}},
                "spec": {"nodeName": node, "containers": [{"name": "c", "image": "registry.example/app:1.0"}]},
                "status": {"phase": "Running"}})
            allocs[str(2 + k)] = {"namespace": "default", "pod": name, "podUID": uid, "interface": "net1",
                                  "containerID": "%064x" % i, "node": node, "provider": "big.default",
                                  "sticky": False}
            i += 1
        cidr = "10.%d.%d.%d/26" % ((first >> 16) & 255, (first >> 8) & 255, first & 255)
        bname = "big.%08x-26" % (0x0A000000 + first)
        rv += 1
        blocks.append({"apiVersion": "sublease.io/v1alpha1", "kind": "IPBlock", "metadata": {
            "name": bname, "uid": "blk-%06d" % b, "resourceVersion": str(rv), "creationTimestamp": TS,
            "labels": {"sublease.io/subnet": "big", "sublease.io/node": node}},
            "spec": {"subnet": "big", "cidr": cidr, "node": node, "allocations": allocs}})
    base["objects"]["/pods"] = base["objects"].get("/pods", []) + pods
    base["objects"]["sublease.io/ipblocks"] = base["objects"].get("sublease.io/ipblocks", []) + blocks
    base["resourceVersion"] = rv
    with open(snap, "w") as f:
        json.dump(base, f)
    log("  snapshot: %d pods, %d IPBlocks, %.0f MB, written in %.1f s"
        % (len(pods), len(blocks), os.path.getsize(snap) / 1e6, time.monotonic() - t))
    del pods, blocks, base
    # 2. The fake from the snapshot; one daemon, which becomes the leader.
    t = time.monotonic()
    # (--load, not --persist: the churn's writes would each wait for a 100 MB snapshot.)
    api = FakeApiServer("--load", snap, "--pod-grace-scale", "0", state_dir=api_dir).start()
    log("  fake API server up in %.1f s" % (time.monotonic() - t))
    out = open(os.path.join(d, "leader.log"), "ab")
    t0 = time.monotonic()
    proc = subprocess.Popen([os.path.join(BIN, "subleased"), "--kubeconfig", api.info["kubeconfig"], "--node-name",
                             "leader-node", "--socket", os.path.join(d, "l.sock"), "--db", os.path.join(d, "l.db"),
                             "--metrics-address", "", "--log-level", "warn"], stdout=out, stderr=out)
    res = {"pods": args.pods, "blocks": args.blocks}
    try:
        deadline = time.monotonic() + 900
        using = None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError("subleased exited")
            st, _, obj = api.request("GET", SUBNETS + "/big", timeout=60)
            using = ((obj or {}).get("status") or {}).get("v4usingIPs") if st == 200 else None
            if using == args.pods:
                break
            time.sleep(1.0)
        t_sync = time.monotonic() - t0
        cpu_sync = cpu_s(proc.pid)
        rss_sync = rss_mib(proc.pid)
        log("  Subnet status counts %s of %d allocations %.1f s after the leader's exec; leader CPU %.2f s, RSS %.1f MiB"
            % (using, args.pods, t_sync, cpu_sync, rss_sync))
        time.sleep(args.steady)
        cpu_steady = (cpu_s(proc.pid) - cpu_sync) / args.steady
        with open("/proc/%d/status" % proc.pid) as f:
            hwm = [int(x.split()[1]) / 1024.0 for x in f if x.startswith("VmHWM:")][0]
        res.update({"status_complete_s": round(t_sync, 1), "cpu_to_status_s": round(cpu_sync, 2),
                    "rss_mib": round(rss_mib(proc.pid), 1), "peak_rss_mib": round(hwm, 1),
                    "steady_cpu_s_per_s": round(cpu_steady, 4), "load": loadavg()})
        log("  steady state over %.0f s: leader CPU %.4f s/s; RSS %.1f MiB (peak %.1f MiB); load %s"
            % (args.steady, cpu_steady, res["rss_mib"], hwm, res["load"]))
        if args.churn > 0:
            res["churn"] = churn(api, proc, args)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        out.close()
        api.cleanup()
        if args.keep:
            log("kept %s" % d)
        else:
            shutil.rmtree(d, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
