"""benches/services.sh's report: markdown tables, the issue-12 targets and a chart.

    report.py RESULTS OUT ELAPSED NCPU CPU DURATION ROUNDS CONNS LOAD_BEFORE LOAD_AFTER NICE BUILD SERVICES
"""

import os
import statistics
import sys
from collections import defaultdict

(results, out, elapsed, ncpu, cpu, duration, rounds, conns, load_before, load_after, nice, build,
 services) = sys.argv[1:]
services = services.split()

SERVERS = ["pyrs-1", "pyrs-2", "gunicorn", "gunicorn-preload", "granian", "tornado"]
LABELS = {
    "pyrs-1": "pyrs, 1 process",
    "pyrs-2": "pyrs, 2 workers",
    "gunicorn": "gunicorn+Flask, 2 sync workers",
    "gunicorn-preload": "gunicorn+Flask --preload, 2 workers",
    "granian": "Granian WSGI, 2 workers",
    "tornado": "Tornado, 1 process",
}
TWO_PROCESS_PEERS = ["gunicorn", "gunicorn-preload", "granian"]
PEERS = TWO_PROCESS_PEERS + ["tornado"]

runs = defaultdict(list)  # (service, server) -> [(rps, p99, valid, why)]
scale = defaultdict(list)
mem = {}  # (service, server) -> dict
for line in open(results):
    f = line.rstrip("\n").split("\t")
    if f[0] == "mem":
        name, service = f[1], f[2]
        server = name[len(service) + 1:]
        mem[(service, server)] = {
            "pss_load": int(f[3]) / 1024, "pss_gc": int(f[4]) / 1024,
            "uss_load": f[5], "uss_gc": f[6], "procs": int(f[7]),
        }
        continue
    label, service = f[0], f[1]
    target = scale if label.startswith("scale:") else runs
    server = label.split(":")[-1][len(service) + 1:]
    target[(service, server)].append((float(f[3]), float(f[4]), f[5] == "valid", f[6], float(f[7])))


def median(rs):
    """(median rps, median p99), or None when a run was invalid or none ran."""
    if not rs or not all(r[2] for r in rs):
        return None
    return statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs)


def uss(csv):
    """'187,185' (MB per worker) -> '187 + 185'."""
    return " + ".join(csv.split(",")) if csv else "n/a"


def fmt(v):
    return f"{v:,.0f}"


print(f"Machine: {ncpu} CPUs, {cpu}. Throughput: every server pinned to CPU 0, `wrk -t1 -c{conns} -d{duration}` "
      f"pinned to CPU 1, both at nice {nice}; median of {rounds} interleaved rounds; every response checked 2xx. "
      f"Memory: each server alone, after one load run, then after `gc.collect()` in each worker; PSS summed over "
      f"all its processes (master, template and workers included). Load average before: {load_before}; after: {load_after}.")
print()
targets = []
chart = {}
for service in services:
    print(f"### {service}")
    print()
    print("| server | processes | requests/s | p99 | server CPU per response | PSS after load | PSS after gc.collect() | USS per worker (load / gc) | requests/s per GB |")
    print("|---|---|---|---|---|---|---|---|---|")
    per_gb = {}
    rps = {}
    for server in SERVERS:
        rs = runs.get((service, server))
        m = mem.get((service, server))
        if not rs and not m:
            continue
        c = median(rs)
        if rs and c is None:
            bad = sorted({r[3] for r in rs if not r[2]})
            cell = "INVALID " + " ".join(bad)
            p99 = ""
        elif c:
            rps[server] = c[0]
            cell, p99 = fmt(c[0]), f"{c[1]:.1f} ms"
        else:
            cell, p99 = "n/a", ""
        cpu_us = f"{statistics.median(r[4] for r in rs):.0f} us" if rs and all(r[2] for r in rs) else "n/a"
        if m and server in rps:
            per_gb[server] = rps[server] / (m["pss_gc"] / 1024)
            chart.setdefault(service, []).append((server, m["pss_gc"], rps[server]))
        memcells = (
            [str(m["procs"]), f"{m['pss_load']:.0f} MB", f"{m['pss_gc']:.0f} MB", f"{uss(m['uss_load'])} / {uss(m['uss_gc'])} MB"]
            if m else ["", "n/a", "n/a", "n/a"]
        )
        print(f"| {LABELS[server]} | {memcells[0]} | {cell} | {p99} | {cpu_us} | {memcells[1]} | {memcells[2]} | {memcells[3]} | "
              f"{fmt(per_gb[server]) if server in per_gb else 'n/a'} |")
    s1, s2 = median(scale.get((service, "pyrs-1"))), median(scale.get((service, "pyrs-2")))
    if s1 and s2:
        print()
        print(f"Both CPUs for the servers (wrk shares them): pyrs 1 process {fmt(s1[0])} requests/s, 2 workers "
              f"{fmt(s2[0])} ({s2[0] / s1[0]:.2f}x).")
    print()

    def target(what, ok, measured):
        targets.append(f"- {service}: {what} (measured {measured}): {'MET' if ok else 'NOT MET' if ok is not None else 'n/a'}")

    best2 = max((rps[p], p) for p in TWO_PROCESS_PEERS if p in rps) if any(p in rps for p in TWO_PROCESS_PEERS) else None
    if "pyrs-2" in rps and best2:
        r = rps["pyrs-2"] / best2[0]
        target(f"pyrs 2 workers >= 2.5x the requests/s of the best 2-process peer ({best2[1]})", r >= 2.5, f"{r:.2f}x")
    bestgb = max((per_gb[p], p) for p in PEERS if p in per_gb) if any(p in per_gb for p in PEERS) else None
    if "pyrs-2" in per_gb and bestgb:
        r = per_gb["pyrs-2"] / bestgb[0]
        target(f"pyrs 2 workers >= 3x the best peer's requests/s per GB ({bestgb[1]})", r >= 3, f"{r:.2f}x")
    m = mem.get((service, "pyrs-2"))
    if m:
        growth = m["pss_gc"] / m["pss_load"] - 1
        target("pyrs 2 workers: PSS after gc.collect() within 5% of PSS after load", abs(growth) <= 0.05,
               f"{m['pss_load']:.0f} -> {m['pss_gc']:.0f} MB, {growth * 100:+.1f}%")
    if s1 and s2:
        target("both CPUs: pyrs 2 workers >= 1.7x pyrs 1 process", s2[0] / s1[0] >= 1.7, f"{s2[0] / s1[0]:.2f}x")

print("Issue-12 targets:")
print("\n".join(targets))
print()
print(f"services.sh took {int(elapsed) // 60} min {int(elapsed) % 60} s ({build} s of it building and setting up the virtualenv).")

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    print("\n(no chart: matplotlib is not installed)")
    sys.exit(0)
if chart:
    fig, axes = plt.subplots(1, len(chart), figsize=(max(8, 5.2 * len(chart)), 5.2), squeeze=False)
    colours = {"pyrs-1": "#1b9e77", "pyrs-2": "#0b6e4f", "gunicorn": "#d95f02", "gunicorn-preload": "#e6ab02",
               "granian": "#7570b3", "tornado": "#e7298a"}
    for ax, (service, points) in zip(axes[0], chart.items()):
        for server, pss, r in points:
            ax.scatter(pss, r, s=60, color=colours[server], label=LABELS[server], zorder=3)
            ax.annotate(server, (pss, r), textcoords="offset points", xytext=(6, 4), fontsize=8)
        ax.set_title(f"{service}: requests/s against memory")
        ax.set_xlabel("PSS after gc.collect(), all processes (MB)")
        ax.set_ylabel("requests/s (server on 1 CPU)")
        ax.set_xlim(0, max(p[1] for p in points) * 1.25)
        ax.set_ylim(0, max(p[2] for p in points) * 1.2)
        ax.grid(True, alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle("benches/services.sh: up and to the left is better", fontsize=10)
    fig.tight_layout(rect=(0, 0.12, 1, 0.96))
    path = os.path.join(out, "services.png")
    fig.savefig(path, dpi=110)
    print(f"\nChart: {path}")
