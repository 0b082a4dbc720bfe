#!/usr/bin/env python3
"""Cluster-mode benchmarks (BENCHMARKS.md, measurements 4 and 5): subleased daemons
against the project's fake Kubernetes API server (tests/fakeapi, TLS on loopback).

4. Node reboot burst: 250 pods x 10 attachment networks (2,500 allocations) exist on
   one node when its daemon starts. Time from the daemon's exec until every allocation
   is committed in the API server (IPBlocks), and until every pod carries its
   annotations; API writes per allocation (the fake server's request log).
5. The Spiderpool scenario: 10 daemons, 1,000 pods (100 Deployments x 10, pods owned by
   ReplicaSets), one Subnet of exactly 1,000 usable addresses. Time to all allocated
   (annotations written), then delete every pod and create 1,000 new ones (time to all
   re-created), then delete all. No duplicate, no leak at the end (IPBlocks empty, no
   live lease in any daemon's database).

For each phase the fake API server's share is measured: its CPU time (from /proc)
against the daemons' CPU time and the wall time, and the summed request durations of
its log. The API server is a Python program; on 2 cores it competes with the daemons.

    python3 bench/cluster_bench.py [--only reboot|spiderpool] [--smoke] [--json FILE]

Correctness (no duplicate, no leak, everything allocated within the bound) decides the
exit code; timing never does. Every wait is bounded; every process is stopped at exit.
"""
import argparse
import ipaddress
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "fakeapi"))
from fakeapi_client import FakeApiServer  # noqa: E402

BIN = os.environ.get("SUBLEASE_BIN") or os.path.join(ROOT, "build", "bin")
SUBNETS = "/apis/kubeovn.io/v1/subnets"
BLOCKS = "/apis/sublease.io/v1alpha1/ipblocks"
PODS = "/api/v1/namespaces/default/pods"
CLK_TCK = os.sysconf("SC_CLK_TCK")
WRITE_VERBS = ("create", "update", "patch", "delete")


class Failed(Exception):
    pass


def log(msg):
    print(msg, flush=True)


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def cpu_s(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except OSError:
        return 0.0


def stop_daemons(daemons, timeout=15):
    """SIGTERM to every daemon ({"proc", "log"} each), then waits; kills what outlives it."""
    daemons = list(daemons)
    for d in daemons:
        d["proc"].send_signal(signal.SIGTERM)
    for d in daemons:
        try:
            d["proc"].wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            d["proc"].kill()
            d["proc"].wait(timeout=5)
        d["log"].close()


def subnet(name, provider, cidr, gateway=None, exclude=()):
    spec = {"provider": provider, "cidrBlock": cidr, "protocol": "IPv4"}
    if gateway:
        spec["gateway"] = gateway
    if exclude:
        spec["excludeIps"] = list(exclude)
    return {"apiVersion": "kubeovn.io/v1", "kind": "Subnet", "metadata": {"name": name}, "spec": spec}


def pod(name, node, networks, owner=None):
    meta = {"name": name, "namespace": "default", "annotations": {"k8s.v1.cni.cncf.io/networks": networks}}
    if owner:
        meta["ownerReferences"] = [owner]
    spec = {"containers": [{"name": "c", "image": "alpine"}]}
    if node:  # None: left for a binding, as the scheduler does
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def binding(name, node):
    return {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node}}


def cni_call(sock_path, op, pod_name, provider, timeout=30):
    """POST /v1/cni/<op> on a daemon's socket as the plugin would (docs/protocol.md)."""
    body = json.dumps({"containerID": "sandbox-" + pod_name, "ifname": "net1", "netns": "/proc/self/ns/net",
                       "provider": provider, "podNamespace": "default", "podName": pod_name}).encode()
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(timeout)
    try:
        s.connect(sock_path)
        s.sendall(b"POST /v1/cni/%s HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n" % (op.encode(), len(body)) + body)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except OSError as e:
        return 0, str(e)
    finally:
        s.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    try:
        return int(head.split()[1]), rest.decode(errors="replace")
    except (IndexError, ValueError):
        return 0, data[:200].decode(errors="replace")


class Bench:
    def __init__(self, args):
        self.args = args
        self.dir = tempfile.mkdtemp(prefix="sublease-cbench-")
        self.api = None
        self.run_dir = self.dir
        self.daemons = {}

    # -- processes --
    def start_api(self, scenario):
        # Each scenario has its own API server, databases and logs.
        self.run_dir = os.path.join(self.dir, scenario)
        d = os.path.join(self.run_dir, "api")
        os.makedirs(d, exist_ok=True)
        extra = []
        # Issue 14: a fake that charges like etcd (docs/fake-apiserver.md "Timing").
        if self.args.write_latency_ms:
            extra += ["--write-latency-ms", self.args.write_latency_ms]
        if self.args.watch_delay_ms:
            extra += ["--watch-delay-ms", self.args.watch_delay_ms]
        self.api = FakeApiServer("--pod-grace-scale", "0", "--bookmark-interval", "1", *extra, state_dir=d).start()
        if extra:
            log("  fake API server: %s" % " ".join(extra))

    def start_daemon(self, node):
        sock = os.path.join(self.run_dir, node + ".sock")
        out = open(os.path.join(self.run_dir, node + ".log"), "ab")
        wrap = os.environ.get("BENCH_DAEMON_WRAP", "").split()  # e.g. "perf record -g -o FILE --"
        proc = subprocess.Popen(
            wrap + [os.path.join(BIN, "subleased"), "--kubeconfig", self.api.info["kubeconfig"], "--node-name", node,
             "--socket", sock, "--db", os.path.join(self.run_dir, node + ".db"), "--metrics-address", "",
             "--release-grace-ms", str(self.args.release_grace_ms), "--log-level", self.args.log_level]
            + list(self.args.daemon_arg or []),
            stdout=out, stderr=out)
        self.daemons[node] = {"proc": proc, "sock": sock, "log": out, "db": os.path.join(self.run_dir, node + ".db")}

    def wait_ready(self, node, seconds=60):
        d = self.daemons[node]
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if d["proc"].poll() is not None:
                raise Failed("subleased on %s exited: %s" % (node, self.tail(node)))
            r = subprocess.run(["curl", "-sf", "--max-time", "2", "--unix-socket", d["sock"],
                                "http://x/v1/cni/status"], capture_output=True)
            if r.returncode == 0:
                return
            time.sleep(0.05)
        raise Failed("subleased on %s not ready in %d s" % (node, seconds))

    def tail(self, node):
        try:
            with open(os.path.join(self.run_dir, node + ".log"), errors="replace") as f:
                return f.read()[-2000:]
        except OSError:
            return ""

    def stop_all(self):
        stop_daemons(self.daemons.values())
        self.daemons = {}
        if self.api:
            self.api.cleanup()
            self.api = None

    def cleanup(self):
        self.stop_all()
        if self.args.keep:
            log("kept %s" % self.dir)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- API helpers --
    def req(self, method, path, body=None, ok=(200, 201), conn=None):
        status, _, obj = self.api.request(method, path, body, timeout=60, conn=conn)
        if status not in ok:
            raise Failed("%s %s -> %s %s" % (method, path, status, str(obj)[:300]))
        return obj

    def parallel(self, items, fn, threads=4):
        """Runs fn(conn, item) over items on a few keep-alive connections."""
        errors = []

        def work(chunk):
            conn = self.api.connection(60)
            try:
                for it in chunk:
                    fn(conn, it)
            except Exception as e:  # reported below
                errors.append(e)
            finally:
                conn.close()
        ts = [threading.Thread(target=work, args=(items[i::threads],)) for i in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(timeout=600)
        if errors:
            raise Failed("API calls failed: %s" % errors[0])

    def block_allocations(self, subnet_name=None):
        path = BLOCKS + ("?labelSelector=sublease.io/subnet%3D" + subnet_name if subnet_name else "")
        out = []
        for b in self.req("GET", path)["items"]:
            net = ipaddress.ip_network(b["spec"]["cidr"])
            for off, who in (b["spec"].get("allocations") or {}).items():
                if who.get("spare"):
                    continue  # a node's spare (--spare-addresses): no pod's allocation
                out.append((b["spec"]["subnet"], str(net.network_address + int(off)), who["namespace"] + "/" + who["pod"]))
        return out

    def annotated(self, prefix, providers):
        """{pod name: {provider: address}} for pods named prefix* carrying every provider's annotations."""
        got = {}
        for item in self.req("GET", PODS)["items"]:
            name = item["metadata"]["name"]
            if not name.startswith(prefix):
                continue
            ann = item["metadata"].get("annotations", {})
            if all(ann.get(p + ".kubernetes.io/allocated") == "true" for p in providers):
                got[name] = {p: ann[p + ".kubernetes.io/ip_address"] for p in providers}
        return got

    def wait_for(self, what, fn, seconds, interval):
        deadline = time.monotonic() + seconds
        last = None
        while time.monotonic() < deadline:
            last = fn()
            if last:
                return last
            time.sleep(interval)
        raise Failed("timed out after %d s waiting for %s (last: %s)\n%s" % (
            seconds, what, str(last)[:200], "\n".join(self.tail(n)[-600:] for n in list(self.daemons)[:2])))

    def request_log(self, since):
        _, obj = self.api.ctl("GET", "/requests?since=%d" % since, timeout=60)
        return obj["requests"], obj["last"]

    def last_seq(self):
        return self.api.ctl("GET", "/requests?since=%d" % (1 << 62))[1]["last"]

    def share(self, t0_cpu, since, wall, phase=None):
        """The API server's and the daemons' CPU since a mark, and the request log summary.
        With --keep, the phase's requests are kept as requests-<phase>.json (each names
        its node in user_agent) for reading who collided with whom."""
        api_cpu = cpu_s(self.api.proc.pid) - t0_cpu["api"]
        daemons_cpu = sum(cpu_s(d["proc"].pid) for d in self.daemons.values()) - t0_cpu["daemons"]
        reqs, _ = self.request_log(since)
        if self.args.keep and phase:
            with open(os.path.join(self.run_dir, "requests-%s.json" % phase), "w") as f:
                json.dump(reqs, f, indent=0)
        by, by_daemons, by_status = {}, {}, {}
        dur = 0.0
        for r in reqs:
            key = "%s %s" % (r["verb"], r["resource"])
            by[key] = by.get(key, 0) + 1
            # The daemons' own requests (IPAM's bill); the harness's are the tests' client.
            if (r.get("user_agent") or "").startswith("subleased"):
                by_daemons[key] = by_daemons.get(key, 0) + 1
                if r["resource"] == "ipblocks" and r["verb"] != "watch":  # 409s: lost races
                    k2 = "%s ipblocks %s" % (r["verb"], r["status"])
                    by_status[k2] = by_status.get(k2, 0) + 1
            if r["verb"] != "watch":
                dur += r.get("duration_ms") or 0
        # What a group-commit window could merge: for each daemon write to an IPBlock, the
        # time since the previous write to the same block came in (start to start).
        starts = {}
        for r in reqs:
            if (r["resource"] == "ipblocks" and r["verb"] in ("update", "create") and "end_mono" in r
                    and (r.get("user_agent") or "").startswith("subleased")):
                starts.setdefault(r["name"], []).append(r["end_mono"] - (r.get("duration_ms") or 0) / 1000.0)
        gaps = sorted(b - a for s in starts.values() for a, b in zip(sorted(s), sorted(s)[1:]))
        window = {}
        if gaps:
            window = {"writes": sum(len(s) for s in starts.values()),
                      "gap_p50_ms": round(gaps[len(gaps) // 2] * 1000, 1),
                      "within_5ms": sum(1 for g in gaps if g <= 0.005),
                      "within_50ms": sum(1 for g in gaps if g <= 0.05)}
        return {"wall_s": round(wall, 3), "api_server_cpu_s": round(api_cpu, 2), "daemons_cpu_s": round(daemons_cpu, 2),
                "ipblock_write_gaps": window,
                "api_requests": len(reqs), "api_request_ms_sum_excl_watch": round(dur), "by_verb": by,
                "by_verb_daemons": by_daemons, "ipblocks_by_status": by_status, "load": loadavg()}

    def cpu_mark(self):
        return {"api": cpu_s(self.api.proc.pid),
                "daemons": sum(cpu_s(d["proc"].pid) for d in self.daemons.values())}

    # -- 4. node reboot burst --
    def reboot(self):
        pods, nets = (5, 2) if self.args.smoke else (250, 10)
        log("== 4. node reboot burst: %d pods x %d networks = %d allocations on one node ==" % (pods, nets, pods * nets))
        log("load average %s" % loadavg())
        self.start_api("reboot")
        providers = ["net%d.default" % i for i in range(nets)]
        for i in range(nets):
            self.req("POST", SUBNETS, subnet("net%d" % i, providers[i], "10.%d.0.0/16" % (100 + i)))
        networks = ",".join("net%d" % i for i in range(nets))
        self.parallel(["burst-%03d" % i for i in range(pods)],
                      lambda c, n: self.req("POST", PODS, pod(n, "node-0", networks), conn=c))
        since = self.last_seq()
        mark = {"api": cpu_s(self.api.proc.pid), "daemons": 0.0}
        t0 = time.monotonic()
        self.start_daemon("node-0")
        total = pods * nets
        committed = self.wait_for("%d allocations in IPBlocks" % total,
                                  lambda: len(self.block_allocations()) >= total, 120, self.args.poll)
        t_commit = time.monotonic() - t0
        got = self.wait_for("annotations on %d pods" % pods,
                            lambda: (lambda g: g if len(g) == pods else None)(self.annotated("burst-", providers)),
                            120, self.args.poll)
        t_annot = time.monotonic() - t0
        sh = self.share(mark, since, t_annot)
        allocs = self.block_allocations()
        for s in set(a[0] for a in allocs):
            addrs = [a[1] for a in allocs if a[0] == s]
            if len(addrs) != len(set(addrs)):
                raise Failed("duplicate address in Subnet %s" % s)
        if len(allocs) != total or committed is None:
            raise Failed("expected %d allocations, IPBlocks hold %d" % (total, len(allocs)))
        for name, by_p in got.items():
            if len(set(by_p.values())) != nets:
                raise Failed("pod %s: %s" % (name, by_p))
        block_writes = sum(v for k, v in sh["by_verb"].items()
                           if k.split()[0] in WRITE_VERBS and k.split()[1] == "ipblocks")
        all_writes = sum(v for k, v in sh["by_verb"].items() if k.split()[0] in WRITE_VERBS)
        res = {"allocations": total, "committed_s": round(t_commit, 3), "annotated_s": round(t_annot, 3),
               "ipblock_writes": block_writes, "ipblock_writes_per_alloc": round(block_writes / total, 4),
               "api_writes": all_writes, "api_writes_per_alloc": round(all_writes / total, 4), "share": sh}
        log("  all %d committed in IPBlocks %.2f s after the daemon's exec; all pods annotated at %.2f s"
            % (total, t_commit, t_annot))
        log("  API writes: %d to IPBlocks (%.3f per allocation), %d in all (%.3f per allocation)"
            % (block_writes, block_writes / total, all_writes, all_writes / total))
        log("  CPU: fake API server %.2f s, daemon %.2f s, over %.2f s wall; requests by verb %s"
            % (sh["api_server_cpu_s"], sh["daemons_cpu_s"], t_annot, json.dumps(sh["by_verb"], sort_keys=True)))
        self.stop_all()
        return res

    # -- 4b. conflicts: many nodes allocating from one subnet at once --
    def conflicts(self):
        """20 daemons, one /24, 10 pods per node created at once (200 of the 253 usable
        addresses): API writes to IPBlocks per successful allocation, from the fake API
        server's request log. The protocol promises this stays close to 1 (claims carry
        their first allocation; group commit shares updates)."""
        nodes, per, cidr = (3, 3, "10.81.0.0/26") if self.args.smoke else (20, self.args.per_node, "10.81.0.0/24")
        total = nodes * per
        log("== 4b. conflicts: %d daemons, %d pods at once in one %s ==" % (nodes, total, cidr))
        log("load average %s" % loadavg())
        self.start_api("conflicts")
        p = "shared.default"
        self.req("POST", SUBNETS, subnet("shared", p, cidr))
        for i in range(nodes):
            self.start_daemon("node-%d" % i)
        for n in self.daemons:
            self.wait_ready(n)
        time.sleep(1.0)
        since, t0 = self.last_seq(), time.monotonic()
        names = [("c-%03d" % i, "node-%d" % (i % nodes)) for i in range(total)]
        self.parallel(names, lambda c, x: self.req("POST", PODS, pod(x[0], x[1], "shared"), conn=c), threads=8)
        got = self.wait_for("%d pods annotated" % total,
                            lambda: (lambda g: g if len(g) == total else None)(self.annotated("c-", [p])),
                            120, self.args.poll)
        elapsed = time.monotonic() - t0
        addrs = [v[p] for v in got.values()]
        if len(set(addrs)) != total:
            raise Failed("duplicate addresses: %d pods, %d distinct" % (total, len(set(addrs))))
        reqs, _ = self.request_log(since)
        if self.args.keep:  # every request of the run, for reading what collided
            with open(os.path.join(self.run_dir, "requests.json"), "w") as f:
                json.dump(reqs, f, indent=0)
        writes = {}
        for r in reqs:
            if r["resource"] == "ipblocks" and r["verb"] in WRITE_VERBS:
                key = "%s %s" % (r["verb"], r["status"])
                writes[key] = writes.get(key, 0) + 1
        n_writes = sum(writes.values())
        conflicts = sum(v for k, v in writes.items() if k.endswith(" 409"))
        res = {"daemons": nodes, "allocations": total, "seconds": round(elapsed, 3),
               "ipblock_writes": n_writes, "ipblock_writes_per_alloc": round(n_writes / total, 3),
               "conflicts_409": conflicts, "by_verb_status": writes}
        log("  %d pods on %d nodes annotated in %.2f s; %d IPBlock writes (%.3f per allocation), %d of them 409; %s"
            % (total, nodes, elapsed, n_writes, n_writes / total, conflicts, json.dumps(writes, sort_keys=True)))
        self.stop_all()
        return res

    # -- 5. Spiderpool scenario --
    def spiderpool(self):
        if self.args.smoke:
            nodes, deploys, per, cidr, gw, excl = 2, 4, 5, "10.80.0.0/27", "10.80.0.1", ["10.80.0.22..10.80.0.30"]
        else:
            # 10.80.0.0/22: 1022 host addresses, minus the gateway, minus 21 excluded = 1000.
            nodes, deploys, per, cidr, gw, excl = 10, 100, 10, "10.80.0.0/22", "10.80.0.1", ["10.80.3.234..10.80.3.254"]
            nodes = self.args.nodes or nodes
            if self.args.roomy:
                # 10.80.0.0/21: 2045 usable; the pods fill half, so no node ends up
                # borrowing the last free addresses from the others.
                cidr, excl = "10.80.0.0/21", []
        total = deploys * per
        ipam = not self.args.no_ipam
        usable = 2045 if self.args.roomy and not self.args.smoke else total
        log("== 5. Spiderpool scenario: %d daemons, %d pods (%d Deployments x %d), %d usable addresses%s%s =="
            % (nodes if ipam else 0, total, deploys, per, usable, ", pods created then bound" if self.args.bind else "",
               "" if ipam else ", HARNESS ALONE (no IPAM)"))
        log("load average %s" % loadavg())
        self.start_api("spiderpool")
        p = "big.default"
        self.req("POST", SUBNETS, subnet("big", p, cidr, gw, excl))
        node_names = ["node-%d" % i for i in range(nodes)]
        if ipam:
            for n in node_names:
                self.start_daemon(n)
            for n in self.daemons:
                self.wait_ready(n)
        time.sleep(1.0)  # every daemon has the Subnet from its watch

        def pods_of(round_):
            out = []
            for d in range(deploys):
                rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "deploy-%03d-5c9f8d7b6" % d,
                      "uid": "rs-%s-%03d" % (round_, d), "controller": True, "blockOwnerDeletion": True}
                for k in range(per):
                    i = d * per + k
                    out.append(("%s-deploy-%03d-5c9f8d7b6-%05d" % (round_, d, k), "node-%d" % (i % nodes), rs))
            return out

        def create(round_):
            """Creates the pods (4 API connections) while one fake kubelet per node runs the
            CNI ADD of each pod as it appears, over the node's socket, retrying every 0.2 s
            on failure as a runtime retries sandbox creation (a pod that arrived while the
            subnet was full gets its address once one is free). Returns when every ADD has
            succeeded; each must return the address its annotation will carry."""
            queues = {n: [] for n in node_names}
            cv = threading.Condition()
            done_creating = [False]
            results, errors = {}, []
            add_ms, retried = [], [0]  # the answered ADD call's duration; ADDs answered "try again"
            sandbox = self.args.sandbox_ms
            rng = random.Random(self.args.seed)

            def creator(conn, x):
                if self.args.bind:  # create, then bind as the scheduler does (two writes, as on a cluster)
                    self.req("POST", PODS, pod(x[0], None, "big", x[2]), conn=conn)
                    self.req("POST", PODS + "/" + x[0] + "/binding", binding(x[0], x[1]), conn=conn)
                else:
                    self.req("POST", PODS, pod(x[0], x[1], "big", x[2]), conn=conn)
                with cv:
                    # The runtime creates the pod's sandbox before the CNI ADD (--sandbox-ms);
                    # pods' sandboxes are created in parallel, so each has its own due time.
                    due = time.monotonic() + (rng.uniform(*sandbox) / 1000.0 if sandbox else 0.0)
                    queues[x[1]].append((due, x[0]))
                    queues[x[1]].sort()
                    cv.notify_all()

            def kubelet(node):
                deadline = time.monotonic() + 300
                while time.monotonic() < deadline:
                    with cv:
                        name = None
                        while time.monotonic() < deadline:
                            q, now = queues[node], time.monotonic()
                            if q and q[0][0] <= now:
                                name = q.pop(0)[1]
                                break
                            if not q and done_creating[0]:
                                return
                            cv.wait(min(0.5, max(0.001, q[0][0] - now)) if q else 0.5)
                        if name is None:
                            break
                    if not ipam:  # the harness alone: the pod is bound, nothing to ask
                        results[name] = name
                        continue
                    while True:
                        t_add = time.monotonic()
                        st, body = cni_call(self.daemons[node]["sock"], "add", name, p)
                        if st == 200:
                            add_ms.append((time.monotonic() - t_add) * 1000.0)
                            results[name] = json.loads(body)["ips"][0]["address"].split("/")[0]
                            break
                        retried[0] += 1
                        if time.monotonic() > deadline:
                            errors.append("%s: ADD %s %s" % (name, st, body[:200]))
                            return
                        time.sleep(0.2)
                errors.append("kubelet on %s ran out of time" % node)
            ks = [threading.Thread(target=kubelet, args=(n,)) for n in node_names]
            for k in ks:
                k.start()
            try:
                self.parallel(pods_of(round_), creator)
            finally:
                with cv:
                    done_creating[0] = True
                    cv.notify_all()
                for k in ks:
                    k.join(timeout=330)
            if errors or len(results) != total:
                raise Failed("fake kubelets: %d of %d ADDs succeeded; %s" % (len(results), total, errors[:3]))
            if len(set(results.values())) != total:
                raise Failed("duplicate addresses in the CNI results")
            if add_ms:
                add_ms.sort()
                q = lambda f: round(add_ms[min(len(add_ms) - 1, int(f * len(add_ms)))], 2)  # noqa: E731
                add_stats[round_] = {"p50_ms": q(0.5), "p90_ms": q(0.9), "p99_ms": q(0.99), "max_ms": round(add_ms[-1], 2),
                                     "answered_try_again": retried[0]}
                log("  CNI ADD (the answered call): p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms; %d answered "
                    "'try again' first" % (q(0.5), q(0.9), q(0.99), add_ms[-1], retried[0]))
            return results

        def delete(round_):
            """As the kubelet tears a pod down: CNI DEL on its node, then the pod object goes."""
            def one(conn, x):
                st, body = cni_call(self.daemons[x[1]]["sock"], "del", x[0], p) if ipam else (200, "")
                if st != 200:
                    raise Failed("DEL %s: %s %s" % (x[0], st, body[:200]))
                self.req("DELETE", PODS + "/" + x[0] + "?gracePeriodSeconds=0", conn=conn)
            self.parallel(pods_of(round_), one)

        def all_annotated(prefix):
            if not ipam:
                return {"-": True}
            g = self.annotated(prefix, [p])
            return g if len(g) == total else None

        def check(got, cni):
            if not ipam:
                return
            if {n: v[p] for n, v in got.items()} != cni:
                raise Failed("the CNI results differ from the pods' annotations")
            addrs = [v[p] for v in got.values()]
            if len(set(addrs)) != total:
                raise Failed("duplicate addresses: %d pods, %d distinct" % (total, len(set(addrs))))
            want = {v[p]: "default/" + n for n, v in got.items()}
            # A pod answered from a spare (--spare-addresses) is recorded in its block a
            # moment later: wait for that (bounded); an address held by another pod than
            # the annotated one fails at once.
            deadline = time.monotonic() + 30
            while True:
                held = {ip: who for _, ip, who in self.block_allocations("big")}
                wrong = [ip for ip, who in held.items() if want.get(ip) != who]
                if wrong:
                    raise Failed("IPBlocks disagree with the annotations at %s (held by %s, annotated for %s)"
                                 % (wrong[0], held[wrong[0]], want.get(wrong[0])))
                if held == want:
                    break
                if time.monotonic() > deadline:
                    raise Failed("IPBlocks disagree with the annotations (%d vs %d entries)" % (len(held), len(want)))
                time.sleep(0.25)

        res = {"daemons": nodes, "pods": total}
        add_stats = {}
        since, mark, t0 = self.last_seq(), self.cpu_mark(), time.monotonic()
        cni = create("a")
        t_alloc = time.monotonic() - t0
        got = self.wait_for("%d pods annotated" % total, lambda: all_annotated("a-"), 300, 0.25)
        t_annot = time.monotonic() - t0
        res["allocate"] = {"seconds": round(t_alloc, 3), "annotated_s": round(t_annot, 3),
                           "share": self.share(mark, since, t_alloc, "create"), "add": add_stats.get("a")}
        check(got, cni)
        log("  first %d: every CNI ADD answered %.2f s after the first pod create; all annotated at %.2f s"
            % (total, t_alloc, t_annot))
        self.print_share(res["allocate"]["share"], total)

        since, mark, t0 = self.last_seq(), self.cpu_mark(), time.monotonic()
        delete("a")
        t_deleted = time.monotonic() - t0
        cni = create("b")
        t_re = time.monotonic() - t0
        got = self.wait_for("%d re-created pods annotated" % total, lambda: all_annotated("b-"), 300, 0.25)
        res["recreate"] = {"seconds": round(t_re, 3), "deletes_s": round(t_deleted, 3),
                           "share": self.share(mark, since, t_re, "recreate"), "add": add_stats.get("b")}
        check(got, cni)
        log("  delete all (CNI DEL + pod delete: %.2f s), then create %d new: every ADD answered %.2f s after "
            "the first delete" % (t_deleted, total, t_re))
        self.print_share(res["recreate"]["share"], total)

        since, mark, t0 = self.last_seq(), self.cpu_mark(), time.monotonic()
        delete("b")
        if not ipam:
            log("  harness alone: nothing to release")
            self.stop_all()
            return res
        self.wait_for("every address released", lambda: len(self.block_allocations("big")) == 0, 300, 0.25)
        t_del = time.monotonic() - t0
        res["delete"] = {"seconds": round(t_del, 3), "share": self.share(mark, since, t_del, "delete")}
        log("  delete all: every address released in the IPBlocks %.2f s after the first delete" % t_del)
        time.sleep(1.0)
        live = 0
        for node, d in self.daemons.items():
            con = sqlite3.connect("file:%s?mode=ro" % d["db"], uri=True, timeout=10)
            try:
                live += con.execute("select count(*) from leases l join subnets s on s.id = l.subnet_id "
                                    "where s.name = 'big' and l.state <> 'released'").fetchone()[0]
            finally:
                con.close()
        if live:
            raise Failed("%d live lease(s) left in the daemons' databases" % live)
        # Kube-OVN IP objects (--ip-objects): written off the ADD path, so they may trail.
        def ip_objects():
            _, _, obj = self.api.request("GET", "/apis/kubeovn.io/v1/ips", timeout=60)
            return len((obj or {}).get("items") or [])
        self.wait_for("every IP object deleted", lambda: ip_objects() == 0, 120, 0.5)
        log("  no duplicate at any check, no live lease, no IPBlock allocation and no IP object left")
        res["leaks"] = 0
        self.stop_all()
        return res

    @staticmethod
    def print_share(sh, pods=None):
        log("    CPU: fake API server %.2f s, daemons %.2f s, over %.2f s wall (load %s); %d API requests, "
            "%d ms summed request time (excl. watches)" % (sh["api_server_cpu_s"], sh["daemons_cpu_s"], sh["wall_s"],
                                                           sh["load"], sh["api_requests"],
                                                           sh["api_request_ms_sum_excl_watch"]))
        if pods:  # issue 14: the daemons' own requests per pod, by verb and resource (BENCHMARKS.md §5)
            per = sorted(((v / pods, k) for k, v in sh.get("by_verb_daemons", {}).items() if not k.startswith("watch")),
                         reverse=True)
            log("    daemons' requests per pod: %s" % ", ".join("%s %.3f" % (k, v) for v, k in per))
            log("    IPBlock requests by status: %s" % json.dumps(sh.get("ipblocks_by_status", {}), sort_keys=True))
            log("    IPBlock writes and the time since the last one to the same block: %s"
                % json.dumps(sh.get("ipblock_write_gaps", {}), sort_keys=True))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["reboot", "conflicts", "spiderpool"])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes; correctness only (ctest)")
    ap.add_argument("--release-grace-ms", type=int, default=300,
                    help="daemons' --release-grace-ms (no kubelet sends DEL here, so deleted pods' leases "
                         "are released after this grace)")
    ap.add_argument("--poll", type=float, default=0.1,
                    help="seconds between the burst's completion checks (each lists every IPBlock or pod, "
                         "which costs the fake API server too)")
    ap.add_argument("--per-node", type=int, default=10,
                    help="conflicts scenario: pods per node (20 nodes, one /24 of 253 usable addresses)")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--write-latency-ms", help="the fake's serial write latency, e.g. 2-3 (etcd's commit; "
                    "docs/fake-apiserver.md Timing); default: free writes")
    ap.add_argument("--watch-delay-ms", help="the fake's watch delivery delay, e.g. 'pods=5-250,*=2-100'")
    ap.add_argument("--bind", action="store_true",
                    help="spiderpool: create each pod unscheduled, then bind it (2 writes per pod, as a cluster)")
    ap.add_argument("--sandbox-ms", type=lambda v: tuple(float(x) for x in v.split("-")) if "-" in v else (float(v), float(v)),
                    help="spiderpool: the stand-in kubelet runs each pod's CNI ADD this long (uniform, e.g. 100-400) "
                         "after the pod is bound, as a runtime creates the sandbox first; default: at once")
    ap.add_argument("--nodes", type=int, help="spiderpool: node daemons (default 10); fewer nodes get more pods each "
                    "per second (a burst per node)")
    ap.add_argument("--roomy", action="store_true",
                    help="spiderpool: a Subnet of 2,045 addresses instead of exactly 1,000 (the pods fill half of it)")
    ap.add_argument("--seed", type=int, default=1, help="random choices of the harness (--sandbox-ms)")
    ap.add_argument("--no-ipam", action="store_true",
                    help="spiderpool: the harness alone (pods created, bound, deleted; no daemon, no ADD)")
    ap.add_argument("--daemon-arg", action="append",
                    help="an extra subleased flag (repeat), e.g. --daemon-arg=--ip-objects=false")
    ap.add_argument("--log-level", default="warn", help="daemons' --log-level")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs) at exit")
    args = ap.parse_args()
    if os.environ.get("BENCH_SMOKE") == "1":
        args.smoke = True
    results = {}
    b = Bench(args)
    try:
        if args.only in (None, "reboot"):
            results["reboot"] = b.reboot()
        if args.only in (None, "conflicts"):
            results["conflicts"] = b.conflicts()
        if args.only in (None, "spiderpool"):
            results["spiderpool"] = b.spiderpool()
    except Failed as e:
        print("FAIL: %s" % e, file=sys.stderr)
        return 1
    finally:
        b.cleanup()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
