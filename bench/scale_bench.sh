#!/usr/bin/env bash
# Measurement 6 (BENCHMARKS.md): scale of one node's state.
#  a. allocator cost of one dynamic allocate + release at 1k, 100k, 1M leases, and heap
#     bytes per lease (scale_bench, Google Benchmark);
#  b. daemon start-up with LEASES (100k) committed leases in its database: time from exec
#     until GET /v1/cni/status answers 200, and its RSS (VmRSS, VmHWM) then;
#  c. plugin binary start-up: exec of `sublease` with CNI_COMMAND=VERSION (host-local too).
#   LEASES=100000 bench/scale_bench.sh
. "$(dirname "$0")/lib.sh"
LEASES=${LEASES:-100000}; STARTS=${STARTS:-5}; VERSIONS=${VERSIONS:-500}
if [ "$BENCH_SMOKE" = 1 ]; then LEASES=1000; STARTS=1; VERSIONS=5; fi
b_setup
b_header "6a. allocator at 1k / 100k / 1M leases"
if [ "$BENCH_SMOKE" = 1 ]; then
  "$SUBLEASE_BIN/scale_bench" --benchmark_filter='/1000$' --benchmark_min_time=0.01
else
  "$SUBLEASE_BIN/scale_bench" --benchmark_min_time=0.2 --benchmark_out="$BENCH_OUT/scale_alloc.json" \
    --benchmark_out_format=json 2>/dev/null
fi

b_header "6b. daemon start-up and RSS with $LEASES leases"
b_subnet "$B_DIR/subnets.yaml" scale scale.default 10.0.0.0/8
"$SUBLEASE_BIN/fill_db" --subnets "$B_DIR/subnets.yaml" --db "$B_DIR/scale.db" --leases "$LEASES"
python3 - "$SUBLEASE_BIN/subleased" "$B_DIR" "$STARTS" "$BENCH_OUT/scale_start.json" <<'PY'
import json, os, socket, subprocess, sys, time
binary, d, starts, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
sock = os.path.join(d, "scale.sock")
def status_ok():
    try:
        s = socket.socket(socket.AF_UNIX); s.settimeout(2); s.connect(sock)
        s.sendall(b"GET /v1/cni/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = s.recv(4096); s.close()
        return data.startswith(b"HTTP/1.1 200")
    except OSError:
        return False
def vm(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
results = []
for i in range(starts):
    if os.path.exists(sock): os.unlink(sock)
    t0 = time.monotonic()
    p = subprocess.Popen([binary, "--standalone", "--subnets", os.path.join(d, "subnets.yaml"), "--socket", sock,
                          "--db", os.path.join(d, "scale.db"), "--metrics-address", "", "--log-level", "warn"],
                         stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, "daemon.log"), "ab"))
    try:
        deadline = t0 + 60
        while not status_ok():
            if p.poll() is not None or time.monotonic() > deadline:
                sys.exit("FAIL: subleased did not become ready: see %s/daemon.log" % d)
            time.sleep(0.002)
        ready = time.monotonic() - t0
        rss, hwm = vm(p.pid, "VmRSS"), vm(p.pid, "VmHWM")
        results.append({"start_s": ready, "rss_mb": rss, "hwm_mb": hwm})
        print("  start %d: ready in %.3f s, VmRSS %.1f MiB, VmHWM %.1f MiB" % (i + 1, ready, rss, hwm), flush=True)
    finally:
        p.terminate()
        p.wait(timeout=30)
best = sorted(r["start_s"] for r in results)
summary = {"runs": results, "start_median_s": best[len(best) // 2], "rss_mb": results[-1]["rss_mb"],
           "hwm_mb": max(r["hwm_mb"] for r in results)}
print("  median start %.3f s, VmRSS %.1f MiB" % (summary["start_median_s"], summary["rss_mb"]))
json.dump(summary, open(out, "w"))
PY

b_header "6c. plugin start-up: exec of VERSION, N=$VERSIONS, interleaved with host-local"
"$SUBLEASE_BIN/ipam_exec_bench" --version-only -n "$VERSIONS" --json "$BENCH_OUT/scale_version.json" \
  --variant sublease "$SUBLEASE_BIN/sublease" - --variant host-local "$CNI_PLUGINS/host-local" -
echo "load average after: $(loadavg)"
