#!/usr/bin/env python3
"""Scale model (issue 14, BENCHMARKS.md §7): N node daemons on one machine against the
fake API server with etcd-like write costs, pods churned at a steady rate per node.

For each N in --nodes: start the fake (TLS, serial write latency), one /16 Subnet, N
`subleased` (each with its metrics endpoint), wait until all are ready, then create pods
bound round-robin to the nodes at `--per-node-rate` pods/s per node (so the cluster's
churn grows with N and each node's stays the same) and delete each after `--lifetime`
seconds. The daemons allocate ahead of time from their pod watch and release when the
pod is gone (no kubelet here, so after --release-grace-ms). After `--warmup` seconds of
churn, a window of `--window` seconds is measured:

- the daemons' API writes per allocation (all, and to IPBlocks), from the fake's log;
- watch bytes received per node, by feed (each daemon's `sublease_informer_total`);
- the daemons' CPU, the leader's CPU and RSS, the fake's CPU.

    python3 bench/scale_model.py [--nodes 10,30,100] [--json FILE] [--plot FILE.png]

Timing never decides the exit code; every wait is bounded; every process is stopped.
"""
import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "fakeapi"))
from cluster_bench import BIN, PODS, SUBNETS, cpu_s, loadavg, log, pod, stop_daemons, subnet, WRITE_VERBS  # noqa: E402
from fakeapi_client import FakeApiServer  # noqa: E402

LEASE = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/sublease-leader"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def rss_mib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def informer_bytes(port):
    """{feed: watch bytes} from a daemon's metrics."""
    out = {}
    try:
        text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10).read().decode()
    except OSError:
        return out
    for m in re.finditer(r'sublease_informer_total\{([^}]*)\} ([0-9.e+]+)', text):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        if labels.get("event") == "watch_bytes":
            out[labels["feed"]] = float(m.group(2))
    return out


class Model:
    def __init__(self, args, nodes):
        self.args, self.n = args, nodes
        self.dir = tempfile.mkdtemp(prefix="sublease-scale-%d-" % nodes)
        self.api = None
        self.daemons = {}

    def start(self):
        extra = ["--write-latency-ms", self.args.write_latency_ms]
        if self.args.watch_delay_ms:
            extra += ["--watch-delay-ms", self.args.watch_delay_ms]
        os.makedirs(os.path.join(self.dir, "api"), exist_ok=True)
        self.api = FakeApiServer("--pod-grace-scale", "0", "--bookmark-interval", "60", *extra,
                                 state_dir=os.path.join(self.dir, "api")).start()
        st, _, obj = self.api.request("POST", SUBNETS, subnet("scale", "scale.default", "10.60.0.0/16"))
        assert st in (200, 201), obj
        for i in range(self.n):
            node = "node-%03d" % i
            port = free_port()
            out = open(os.path.join(self.dir, node + ".log"), "ab")
            proc = subprocess.Popen(
                [os.path.join(BIN, "subleased"), "--kubeconfig", self.api.info["kubeconfig"], "--node-name", node,
                 "--socket", os.path.join(self.dir, node + ".sock"), "--db", os.path.join(self.dir, node + ".db"),
                 "--metrics-address", "127.0.0.1:%d" % port, "--release-grace-ms", "300",
                 "--log-level", "warn"] + list(self.args.daemon_arg or []),
                stdout=out, stderr=out)
            self.daemons[node] = {"proc": proc, "port": port, "log": out}
        deadline = time.monotonic() + 300
        for node, d in self.daemons.items():
            while time.monotonic() < deadline:
                if d["proc"].poll() is not None:
                    raise RuntimeError("subleased %s exited" % node)
                r = subprocess.run(["curl", "-sf", "--max-time", "2", "--unix-socket",
                                    os.path.join(self.dir, node + ".sock"), "http://x/v1/cni/status"],
                                   capture_output=True)
                if r.returncode == 0:
                    break
                time.sleep(0.1)
            else:
                raise RuntimeError("subleased %s not ready" % node)

    def stop(self):
        stop_daemons(self.daemons.values(), timeout=20)
        if self.api:
            self.api.cleanup()
        if not self.args.keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    def snapshot(self):
        return {"t": time.monotonic(), "seq": self.api.ctl("GET", "/requests?since=%d" % (1 << 62))[1]["last"],
                "api_cpu": cpu_s(self.api.proc.pid),
                "cpu": {n: cpu_s(d["proc"].pid) for n, d in self.daemons.items()},
                "bytes": {n: informer_bytes(d["port"]) for n, d in self.daemons.items()}}

    def churn(self):
        """Creates pods at the steady rate, deletes each after its lifetime; returns
        (measure-start snapshot, measure-end snapshot, pods created in the window)."""
        rate = self.args.per_node_rate * self.n
        stop_at = self.args.warmup + self.args.window
        created, lock = [], threading.Lock()
        errors = []
        t0 = time.monotonic()
        marks = {}

        def creator():
            conn = self.api.connection(60)
            i = 0
            while True:
                due = t0 + i / rate
                now = time.monotonic()
                if due - t0 >= stop_at:
                    break
                if due > now:
                    time.sleep(due - now)
                name = "churn-%06d" % i
                node = "node-%03d" % (i % self.n)
                st, _, obj = self.api.request("POST", PODS, pod(name, node, "scale"), conn=conn, timeout=60)
                if st not in (200, 201):
                    errors.append("create %s: %s" % (name, st))
                with lock:
                    created.append((time.monotonic(), name))
                i += 1
            conn.close()

        def deleter():
            conn = self.api.connection(60)
            j = 0
            while time.monotonic() - t0 < stop_at + self.args.lifetime + 5:
                with lock:
                    item = created[j] if j < len(created) else None
                if item is None:
                    time.sleep(0.05)
                    continue
                due = item[0] + self.args.lifetime
                if due > time.monotonic():
                    time.sleep(min(0.05, due - time.monotonic()))
                    continue
                st, _, _ = self.api.request("DELETE", PODS + "/" + item[1] + "?gracePeriodSeconds=0", conn=conn,
                                            timeout=60)
                if st not in (200, 202, 404):
                    errors.append("delete %s: %s" % (item[1], st))
                j += 1
            conn.close()

        threads = [threading.Thread(target=creator), threading.Thread(target=deleter)]
        for t in threads:
            t.start()
        time.sleep(self.args.warmup)
        marks["start"] = self.snapshot()
        n0 = len(created)
        time.sleep(self.args.window)
        marks["end"] = self.snapshot()
        n1 = len(created)
        for t in threads:
            t.join(timeout=stop_at + self.args.lifetime + 60)
        if errors:
            log("  harness errors: %s" % errors[:3])
        return marks["start"], marks["end"], n1 - n0

    def run(self):
        log("== scale model: %d daemons, %.2f pods/s per node (%.1f/s in all), lifetime %d s; load %s =="
            % (self.n, self.args.per_node_rate, self.args.per_node_rate * self.n, self.args.lifetime, loadavg()))
        t = time.monotonic()
        self.start()
        log("  %d daemons ready in %.1f s" % (self.n, time.monotonic() - t))
        a, b, allocs = self.churn()
        _, logobj = self.api.ctl("GET", "/requests?since=%d" % a["seq"], timeout=120)
        reqs = [r for r in logobj["requests"] if r["seq"] <= b["seq"]]
        mine = [r for r in reqs if (r.get("user_agent") or "").startswith("subleased")]
        writes = [r for r in mine if r["verb"] in WRITE_VERBS]
        by = {}
        for r in mine:
            if r["verb"] != "watch":
                k = "%s %s" % (r["verb"], r["resource"])
                by[k] = by.get(k, 0) + 1
        block_writes = sum(1 for r in writes if r["resource"] == "ipblocks")
        wall = b["t"] - a["t"]
        per_node = {}
        for node in self.daemons:
            for feed, v in b["bytes"][node].items():
                per_node.setdefault(feed, []).append(v - a["bytes"][node].get(feed, 0.0))
        bytes_per_node_s = {f: round(sum(v) / len(v) / wall, 1) for f, v in per_node.items()}
        cpu = {n: b["cpu"][n] - a["cpu"][n] for n in self.daemons}
        st, _, lease = self.api.request("GET", LEASE)
        leader = ((lease or {}).get("spec") or {}).get("holderIdentity", "") if st == 200 else ""
        leader_node = next((n for n in self.daemons if leader.startswith(n)), None)
        res = {"daemons": self.n, "per_node_rate": self.args.per_node_rate, "window_s": round(wall, 2),
               "allocations": allocs, "load": loadavg(),
               "daemon_writes_per_alloc": round(len(writes) / max(allocs, 1), 3),
               "ipblock_writes_per_alloc": round(block_writes / max(allocs, 1), 3),
               "requests_per_alloc": {k: round(v / max(allocs, 1), 3) for k, v in sorted(by.items())},
               "watch_bytes_per_node_per_s": bytes_per_node_s,
               "watch_bytes_per_node_per_s_total": round(sum(bytes_per_node_s.values()), 1),
               "daemons_cpu_s_per_s": round(sum(cpu.values()) / wall, 3),
               "max_daemon_cpu_s_per_s": round(max(cpu.values()) / wall, 3),
               "leader": leader_node,
               "leader_cpu_s_per_s": round(cpu[leader_node] / wall, 3) if leader_node else None,
               "leader_rss_mib": round(rss_mib(self.daemons[leader_node]["proc"].pid), 1) if leader_node else None,
               "median_rss_mib": round(sorted(rss_mib(d["proc"].pid) for d in self.daemons.values())[self.n // 2], 1),
               "api_server_cpu_s_per_s": round((b["api_cpu"] - a["api_cpu"]) / wall, 3)}
        log("  %d allocations in %.1f s: daemon writes per allocation %.3f (IPBlocks %.3f); requests per allocation %s"
            % (allocs, wall, res["daemon_writes_per_alloc"], res["ipblock_writes_per_alloc"],
               json.dumps(res["requests_per_alloc"], sort_keys=True)))
        log("  watch bytes per node per second: %s (total %.0f)" % (json.dumps(bytes_per_node_s, sort_keys=True),
                                                                    res["watch_bytes_per_node_per_s_total"]))
        log("  CPU: daemons %.3f s/s in all (max one %.3f), leader %s %.3f s/s RSS %.1f MiB (median daemon %.1f MiB); "
            "fake API server %.3f s/s" % (res["daemons_cpu_s_per_s"], res["max_daemon_cpu_s_per_s"], leader_node,
                                          res["leader_cpu_s_per_s"] or 0, res["leader_rss_mib"] or 0,
                                          res["median_rss_mib"], res["api_server_cpu_s_per_s"]))
        return res


def plot(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ns = [r["daemons"] for r in results]
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    feeds = sorted({f for r in results for f in r["watch_bytes_per_node_per_s"]})
    for f in feeds:
        ax[0].plot(ns, [r["watch_bytes_per_node_per_s"].get(f, 0) for r in results], marker="o", label=f)
    ax[0].plot(ns, [r["watch_bytes_per_node_per_s_total"] for r in results], marker="s", label="all feeds")
    ax[0].set_xlabel("node daemons")
    ax[0].set_ylabel("watch bytes / s received per node")
    ax[0].set_xscale("log")
    ax[0].legend()
    ax[0].set_title("watch traffic per node (same churn per node)")
    ax[1].plot(ns, [r["daemon_writes_per_alloc"] for r in results], marker="o", label="all daemon writes")
    ax[1].plot(ns, [r["ipblock_writes_per_alloc"] for r in results], marker="o", label="IPBlock writes")
    ax[1].set_xlabel("node daemons")
    ax[1].set_ylabel("API writes per allocation")
    ax[1].set_xscale("log")
    ax[1].set_ylim(bottom=0)
    ax[1].legend()
    ax[1].set_title("API writes per allocation")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", default="10,30,100")
    ap.add_argument("--per-node-rate", type=float, default=0.2, help="pods created per second per node")
    ap.add_argument("--lifetime", type=float, default=10.0, help="seconds each pod lives")
    ap.add_argument("--warmup", type=float, default=15.0)
    ap.add_argument("--window", type=float, default=30.0)
    ap.add_argument("--write-latency-ms", default="2-3")
    ap.add_argument("--watch-delay-ms", default="pods=5-50,*=2-20")
    ap.add_argument("--daemon-arg", action="append")
    ap.add_argument("--json")
    ap.add_argument("--plot")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    results = []
    for n in [int(x) for x in args.nodes.split(",")]:
        m = Model(args, n)
        try:
            results.append(m.run())
        finally:
            m.stop()
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1)
    if args.plot and results:
        plot(results, args.plot)
        log("plot: %s" % args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
