#!/usr/bin/env python3
"""Writes BENCHMARKS.md from one bench/run: the goals table with ratios, then
each step's own report. Reads RUN/summary.jsonl (dhcp.sh, boot.sh, memory.sh
and step lines), RUN/storm.jsonl and RUN/enroll.out; prints the goals table."""

import argparse
import glob
import json
import os
import platform
import re
import subprocess
import sys
import time


def load_jsonl(path):
    rows = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line.startswith("{"):
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError:
                        pass
    return rows


def num(s):
    try:
        return float(s)
    except (TypeError, ValueError):
        return None


def ratio(a, b):
    return a / b if a and b else None


def fmt_ratio(r):
    return "n/a" if r is None else f"{r:.2f}x"


def verdict(ok):
    return "n/a" if ok is None else ("**met**" if ok else "**missed**")


# What limits each goal when it is missed: the analysis as of the commit that
# added the goal's benchmark (see the closing notes of issue 6). Printed only
# for goals this run missed, under the figures that show by how much.
WHY = {
    "≥ 2x Kea": "perfdhcp is one single-threaded client on one core: past about 12-13k DORA/s its own "
    "socket overflows (dhcp.sh counts receive-buffer drops on both sides and says when the client's limit "
    "was hit), so the rate row measures the client for both servers. The CPU row is the server's own cost: "
    "per exchange the hub pays two recvmsg and two sendmsg, decode, decide and encode, and a share of one "
    "fsync per batch (an ACK is sent only after its lease is on disk; Kea's memfile appends without fsync). "
    "2x on rate needs both a client that can offer it and at most half of Kea's CPU per DORA.",
    "> 1x atftpd": "At windowsize 1 every block waits for its ACK: both servers are bound by the round "
    "trip through the veth pair and the client, not by their own work. One large transfer on a shared VM "
    "swings by up to 2x between runs, for every server; bench/run takes the best of BENCH_REPEAT (3) per cell.",
    "≥ 3x tftpd-hpa": "tftpd-hpa implements no windowsize (RFC 7440) and answers lock-step; at windowsize 1 "
    "so does the hub, and both are bound by the round trip. The 3x comes from windows, which a client must ask for "
    "(iPXE and atftp do; PXE ROMs do not).",
    "≥ 0.9x nginx": "nginx sends files with sendfile(2) from the page cache; the hub serves boot files from "
    "its in-memory cache with write(2) of 256 KiB slices, one copy per byte, on the one core the server gets.",
    "0 failures and p99 < 0.5x dnsmasq+nginx": "The storm moves N x 11.6 MB over HTTP; on one server core "
    "the hub's copy from its cache (about 2.7 GB/s) bounds the last machine's time to kernel. dnsmasq+nginx's "
    "p99 counts only the machines that booted: dnsmasq offers one address to several machines in a burst "
    "and NAKs all but one REQUEST, and a machine NAKed 8 times has failed.",
    "< 100 MiB": "Each lease costs about 280 bytes in memory (the lease, its client key and hardware address, "
    "two indexes); each node about 2.5 KB beside its deflated inventory. Right after a fill the allocator "
    "still holds what 10k TLS handshakes and 100k DHCP exchanges used.",
}


def machine():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = 0
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) // 1024 // 1024
    except (OSError, ValueError, IndexError):
        pass
    distro = "?"
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    distro = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({cpu}), {mem} GiB, {distro}, kernel {platform.release()}"


def git(*args):
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return ""


def parse_enroll(path):
    """Sections of enroll_bench output: (title, agents/s, enroll p99 ms, failed)."""
    out = []
    if not os.path.exists(path):
        return out
    title = None
    for line in open(path):
        if line.startswith("## "):
            title = line[3:].strip()
        m = re.search(r"ok=(\d+) failed=(\d+)", line)
        if m:
            ok, failed = int(m.group(1)), int(m.group(2))
        m = re.search(r"->\s+([\d.]+) agents/s", line)
        if m:
            out.append({"title": title, "rate": float(m.group(1)), "ok": ok, "failed": failed})
        m = re.match(r"\| enroll .*?\| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|", line)
        if m and out:
            out[-1]["p99"] = float(m.group(3))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--quick", default="0")
    ap.add_argument("--commands", default="")
    ap.add_argument("--results", required=True)
    a = ap.parse_args()

    summary = load_jsonl(os.path.join(a.run, "summary.jsonl"))
    storm = load_jsonl(os.path.join(a.run, "storm.jsonl"))
    dhcp = {r["server"]: r for r in summary if r.get("bench") == "dhcp"}
    boot = {r["key"]: r for r in summary if r.get("bench") == "boot"}
    mem = next((r for r in summary if r.get("bench") == "memory"), None)
    steps = [r for r in summary if r.get("bench") == "step"]
    enroll = parse_enroll(os.path.join(a.run, "enroll.out"))

    rows = []  # (workload, ours, anchor, ratio, goal, verdict)

    # DHCP throughput
    ours, kea = dhcp.get("provisioner", {}), dhcp.get("kea", {})
    o, k = num(ours.get("dora_per_s")), num(kea.get("dora_per_s"))
    r = ratio(o, k)
    rows.append(("DHCP max DORA/s, perfdhcp relayed, < 1 % drops", o, f"Kea {k}", fmt_ratio(r), "≥ 2x Kea",
                 verdict(None if r is None else r >= 2)))
    oc, kc = num(ours.get("cpu_pct")), num(kea.get("cpu_pct"))
    if o and k and oc and kc:
        ous, kus = oc * 1e4 / o, kc * 1e4 / k
        rows.append(("DHCP server CPU µs per DORA (lower is better)", f"{ous:.0f}", f"Kea {kus:.0f}",
                     fmt_ratio(kus / ous) + " less CPU", "(explains the rate row)", ""))
    d = dhcp.get("dnsmasq", {})
    if num(d.get("dora_per_s")):
        rows.append(("DHCP max DORA/s vs dnsmasq", o, f"dnsmasq {d['dora_per_s']}",
                     fmt_ratio(ratio(o, num(d["dora_per_s"]))), "", ""))

    # Avalanche
    aval = {s["server"]: s for s in storm if s.get("kind") == "avalanche"}
    ao = (aval.get("provisioner") or {}).get("result") or {}
    for anchor in ("kea", "dnsmasq"):
        ar = (aval.get(anchor) or {}).get("result") or {}
        if not ao and not ar:
            continue
        n = (aval.get("provisioner") or aval.get(anchor) or {}).get("n")
        ot = (ao.get("time_to_bound_ms") or {}).get("max")
        at = (ar.get("time_to_bound_ms") or {}).get("max")
        ours_cell = f"{ot} ms, {ao.get('failed', '?')} failed" if ao else "-"
        anc_cell = f"{anchor} {at} ms, {ar.get('failed', '?')} failed" if ar else f"{anchor} -"
        rows.append((f"DHCP avalanche: {n} on-link clients at once, time to all bound", ours_cell, anc_cell,
                     fmt_ratio(ratio(num(at), num(ot))) + " faster" if ot and at else "n/a", "(no goal)", ""))

    # TFTP single transfer matrix
    def first(key):
        v = boot.get(key, {}).get("value", "")
        return num(v.split()[0]) if v else None

    bl = sorted({int(k.split(",")[2]) for k in boot if k.startswith("tftp,")})
    ws = sorted({int(k.split(",")[3]) for k in boot if k.startswith("tftp,")})
    for b in bl:
        for w in ws:
            o = first(f"tftp,provisioner,{b},{w}")
            at, hpa = first(f"tftp,atftpd,{b},{w}"), first(f"tftp,tftpd-hpa,{b},{w}")
            ra = ratio(o, at)
            rows.append((f"TFTP one client, large file, blksize {b}, windowsize {w}, MB/s", o, f"atftpd {at}",
                         fmt_ratio(ra), "> 1x atftpd", verdict(None if ra is None else ra > 1)))
            if b == 1468:
                rh = ratio(o, hpa)
                rows.append((f"TFTP one client, blksize 1468, windowsize {w} asked, MB/s", o,
                             f"tftpd-hpa {hpa} (grants no windowsize)", fmt_ratio(rh), "≥ 3x tftpd-hpa",
                             verdict(None if rh is None else rh >= 3)))
    concs = sorted({int(k.split(",")[2]) for k in boot if k.startswith("conc,")})
    for c in concs:
        vals = {}
        for s in ("provisioner", "atftpd", "tftpd-hpa", "dnsmasq"):
            v = boot.get(f"conc,{s},{c}", {}).get("value", "").split()
            vals[s] = (num(v[0]), v[1], v[2]) if len(v) >= 3 else (None, "?", "?")
        o = vals["provisioner"]
        anchors = ", ".join(f"{s} {vals[s][0]} ({vals[s][1]}/{vals[s][2]} failed)" for s in ("atftpd", "tftpd-hpa", "dnsmasq"))
        rs = ", ".join(f"{fmt_ratio(ratio(o[0], vals[s][0]))} {s}" for s in ("atftpd", "tftpd-hpa", "dnsmasq"))
        rows.append((f"TFTP {c} concurrent clients, 850 KB each, aggregate MB/s", f"{o[0]} ({o[1]}/{o[2]} failed)",
                     anchors, rs, "(no goal)", ""))

    # HTTP
    hc = sorted({int(k.split(",")[2]) for k in boot if k.startswith("http,")})
    for c in hc:
        o, n = first(f"http,provisioner,{c}"), first(f"http,nginx,{c}")
        r = ratio(o, n)
        rows.append((f"HTTP large file, {c} connection(s), MB/s", o, f"nginx {n}", fmt_ratio(r), "≥ 0.9x nginx",
                     verdict(None if r is None else r >= 0.9)))
    ro, rn = boot.get("rps,provisioner", {}).get("value", "").split(), boot.get("rps,nginx", {}).get("value", "").split()
    if len(ro) > 1 or len(rn) > 1:
        o = num(ro[1]) if len(ro) > 1 else None
        n = num(rn[1]) if len(rn) > 1 else None
        rows.append(("HTTP iPXE script, 16 connections, req/s", o, f"nginx {n}", fmt_ratio(ratio(o, n)), "(no goal)", ""))

    # Enrollment
    for e in enroll:
        rows.append((f"Enrollment over mTLS: {e['title']}", f"{e['rate']:.0f} agents/s, p99 {e.get('p99', '?')} ms, "
                     f"{e['failed']} failed", "(no anchor has mTLS enrollment)", "", "", ""))

    # Boot storm
    boots = [s for s in storm if s.get("kind") == "boot"]
    for n in sorted({s["n"] for s in boots}):
        by = {s["server"]: (s.get("result") or {}) for s in boots if s["n"] == n}
        o, d = by.get("provisioner", {}), by.get("dnsmasq+nginx", {})
        op99 = (o.get("time_to_kernel_ms") or {}).get("p99")
        dp99 = (d.get("time_to_kernel_ms") or {}).get("p99")
        r = ratio(num(op99), num(dp99))
        goal, ok = "", None
        if n >= 5000:
            goal = "0 failures and p99 < 0.5x dnsmasq+nginx"
            ok = (o.get("failed") == 0) and r is not None and r < 0.5
        cell = lambda x, p: (f"{x.get('booted', '?')}/{n} booted, p50 {(x.get('time_to_kernel_ms') or {}).get('p50')} ms, "
                             f"p99 {p} ms") if x else "-"
        rows.append((f"Boot storm, {n} machines: time to kernel", cell(o, op99), "dnsmasq+nginx " + cell(d, dp99),
                     fmt_ratio(r) + " of its p99" if r else "n/a", goal, verdict(ok) if goal else ""))

    # Memory
    if mem:
        mib = lambda k: mem.get(k, 0) / 1024
        rows.append((f"Hub RSS, {mem.get('nodes')} nodes + {mem.get('leases')} leases, restarted on its store",
                     f"{mib('rss_restarted_kib'):.1f} MiB", "", "", "< 100 MiB", verdict(mib("rss_restarted_kib") < 100)))
        rows.append(("Hub RSS, same fleet, live right after filling it over DHCP and mTLS",
                     f"{mib('rss_filled_kib'):.1f} MiB (high-water {mib('hwm_peak_kib'):.1f})", "", "", "< 100 MiB",
                     verdict(mib("rss_filled_kib") < 100)))

    def cellstr(v):
        return "-" if v is None else str(v)

    table = ["| workload | ours | anchor | ratio | goal | verdict |", "|---|---|---|---|---|---|"]
    for w, o, an, r, g, v in rows:
        table.append(f"| {w} | {cellstr(o)} | {an} | {r} | {g} | {v} |")
    table_text = "\n".join(table)
    print(table_text)

    failed_steps = [s for s in steps if s.get("rc") != 0]
    commit = git("rev-parse", "--short", "HEAD")
    dirty = " (with uncommitted changes)" if git("status", "--porcelain", "--untracked-files=no") else ""
    now = time.strftime("%Y-%m-%d %H:%M:%S %Z")

    def newest(pattern):
        files = sorted(glob.glob(os.path.join(a.results, pattern)), key=os.path.getmtime)
        return files[-1] if files else None

    with open(a.out, "w") as f:
        f.write("# Benchmarks\n\n")
        if a.quick == "1":
            f.write("**Quick run (BENCH_QUICK=1): small sizes, short steps; figures are not comparable.**\n\n")
        f.write(f"Produced by `bash bench/run` on {now}, commit {commit}{dirty}.\n\n")
        f.write(f"Machine: {machine()}. Servers pinned to CPU 1, load generators to CPU 0 (each step's report says so).\n\n")
        f.write("Every figure below comes from this one run: our hub and each anchor on identical namespaces, "
                "files and clients, one after another. Ratios are ours / anchor (for times: anchor / ours).\n\n")
        f.write("## Goals\n\n" + table_text + "\n\n")
        f.write("The boot storm's p99 for dnsmasq+nginx is over the machines that booted; the failed ones "
                "are not in it.\n\n")
        missed = [r for r in rows if r[5] == "**missed**"]
        if missed:
            f.write("## Goals missed, and what limits them\n\n")
            for goal in dict.fromkeys(r[4] for r in missed):
                which = "; ".join(f"{r[0]}: {cellstr(r[1])}" + (f" vs {r[2]} ({r[3]})" if r[2] else "")
                                  for r in missed if r[4] == goal)
                f.write(f"- **{goal}** — {which}. {WHY.get(goal, '')}\n")
            f.write("\n")
        if failed_steps:
            f.write("Steps that failed: " + ", ".join(f"{s['name']} (rc {s['rc']})" for s in failed_steps) + "\n\n")
        f.write("## Commands\n\n```\n" + a.commands.strip() + "\n```\n\n")
        f.write("Step times: " + ", ".join(f"{s['name']} {s['secs']} s" for s in steps) + ".\n\n")
        f.write("Raw output of this run: `" + os.path.relpath(a.run, os.path.dirname(os.path.abspath(a.out))) + "/` (not committed).\n\n")
        f.write("## Each step's report\n\n")
        for title, pattern in (("DHCP throughput", "dhcp-*.md"), ("TFTP and HTTP", "boot-*.md"), ("Memory", "memory-*.md")):
            p = newest(pattern)
            if p:
                body = open(p).read().replace("\n# ", "\n### ")
                body = re.sub(r"^# ", "### ", body)
                f.write(f"<details><summary>{title} ({os.path.basename(p)})</summary>\n\n{body}\n</details>\n\n")
        for name, path in (("Boot storm and avalanche (JSON per run)", os.path.join(a.run, "storm.jsonl")),
                           ("Enrollment", os.path.join(a.run, "enroll.out"))):
            if os.path.exists(path):
                f.write(f"<details><summary>{name}</summary>\n\n```\n{open(path).read().strip()}\n```\n</details>\n\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
