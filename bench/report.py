"""The short stdout table: every figure beside its same-run baseline."""

from __future__ import annotations

from typing import Any


def _ms(d: dict[str, Any] | None, key: str = "p50_ms") -> str:
    if not d or key not in d:
        return "-"
    v = d[key]
    return f"{v / 1000:.2f} s" if v >= 10_000 else f"{v:.1f} ms"


def _mib(kib: int | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.0f}"


def _check(ok: bool | None) -> str:
    return "" if ok is None else (" ok" if ok else " MISS")


def rows(result: dict[str, Any]) -> list[tuple[str, str, str, str, str, str]]:
    sc = result.get("scenarios", {})
    out: list[tuple[str, str, str, str, str, str]] = []

    tp = sc.get("throughput")
    if tp:
        fresh = tp["baselines"]["fresh_dir"]
        names = {"http_batch": "1 throughput: HTTP batch",
                 "http_single": "1 throughput: HTTP 1/req",
                 "qsub_parallel": "1 throughput: qsub", "array": "1 throughput: one array"}
        for key, label in names.items():
            v = tp["variants"].get(key)
            if not v or "jobs_per_s" not in v:
                continue
            r = v["ratio_to_fresh_dir"]
            how = "qsub -J" if key == "array" else f"{v['threads']} thr"
            if v.get("batch"):
                how += f", {v['batch']}/req"
            bl = (f"fresh-dir {v['baseline_fresh_dir_jobs_per_s']:.0f}/s, spawn "
                  f"{v['baseline_spawn_jobs_per_s']:.0f}/s ({tp['baseline_threads']} thr)")
            out.append((f"{label} ({how})", str(v["n"]),
                        f"{v['jobs_per_s']:.1f} jobs/s", bl, f"{r:.3f}",
                        ">=0.30" + _check(r >= 0.30)))
        for key in names:
            v = tp["variants"].get(key)
            if v and "pkbs_cpu_ms_per_job" in v:
                out.append((f"  pkbs CPU/job ({key})", str(v["n"]),
                            f"{v['pkbs_cpu_ms_per_job']:.2f} ms",
                            f"fresh-dir parent {fresh['parent_cpu_ms_per_job']:.2f} ms",
                            f"{v['pkbs_cpu_ms_per_job'] / fresh['parent_cpu_ms_per_job']:.1f}",
                            ""))
        arr = tp["variants"].get("array")
        if arr and "skipped" in arr:
            out.append(("1 throughput: array", "-", "skipped", "arrays not implemented",
                        "", ""))

    ql = sc.get("qsub_latency")
    if ql:
        t = ql["times"]
        for mode, label in (("warm", "2 qsub p50 (.pyc, like a wheel)"),
                            ("as_is", "2 qsub p50 (as-is, no .pyc)")):
            r = ql[f"ratio_qsub_to_python_{mode}"]
            out.append((label, str(ql["samples"]),
                        f"{_ms(t[f'qsub_{mode}'])} (p95 {_ms(t[f'qsub_{mode}'], 'p95_ms')})",
                        f"python -c pass {_ms(t[f'python_c_pass_{mode}'])}",
                        f"{r:.2f}", "<=2.5" + _check(r <= 2.5)))
        out.append(("2 qsub p50 vs bare HTTP POST", str(ql["samples"]),
                    _ms(t["qsub_warm"]),
                    f"POST from running Python {_ms(t['http_post_new_connection'])} "
                    f"(keep-alive {_ms(t['http_post_keep_alive'])})",
                    f"{ql['ratio_qsub_to_http_post']:.1f}", ""))

    sl = sc.get("start_latency")
    if sl:
        s = sl["submit_to_start_record"]
        out.append(("3 submit->start p50 (idle)", str(sl["samples"]),
                    f"{_ms(s)} (p95 {_ms(s, 'p95_ms')})",
                    f"spawn {_ms(sl['baseline_spawn'])}", "",
                    "<=50 ms" + _check(s.get("p50_ms", 1e9) <= 50)))
        f = sl["submit_to_finished_record"]
        r = sl.get("ratio_finish_p50_to_fresh_dir_p50")
        out.append(("3 submit->finished p50", str(sl["samples"]),
                    f"{_ms(f)} (p95 {_ms(f, 'p95_ms')})",
                    f"fresh-dir job {_ms(sl['baseline_fresh_dir_job'])}",
                    "-" if r is None else f"{r:.1f}", ""))

    cl = sc.get("container_latency")
    if cl and "skipped" not in cl:
        for kind in ("process", "container"):
            s = cl[kind]["submit_to_start_record"]
            f = cl[kind]["submit_to_finished_record"]
            out.append((f"3c {kind} job: submit->start p50", str(cl["samples"]),
                        f"{_ms(s)} (finished {_ms(f)})",
                        f"docker run --rm true {_ms(cl['baseline_docker_run_true'])}", "", ""))

    arr = sc.get("array")
    if arr and "skipped" in arr:
        out.append(("4 big array", "-", "skipped", "arrays not implemented", "", ""))
    elif arr:
        one = arr["baseline_qsub_one_job"]
        out.append((f"4 array of {arr['size']}: submit", str(arr["size"]),
                    f"{arr['submit_s']:.2f} s", f"qsub of one job {_ms(one)}",
                    f"{arr['ratio_submit_to_one_qsub']:.1f}",
                    "<=5 s" + _check(arr["submit_s"] <= 5)))

        def _q(d: dict[str, Any]) -> str:
            return f"{d['s']:.2f} s" if "s" in d else f">{d['timed_out_after_s']:.0f} s"

        out.append(("  qstat / qstat -t (array queued)", str(arr["size"]),
                    f"{_q(arr['qstat'])} / {_q(arr['qstat_t'])}",
                    f"python -c pass {_ms(arr['baseline_python_c_pass'])}", "", ""))

    hist = sc.get("history")
    if hist:
        for p in hist["points"]:
            k = p["records_in_kv"]
            r = p["ratio_qstat_x_to_kv_scan"]
            out.append((f"5 qstat -x ({p['qstat_x_lines']} lines)", str(k),
                        _ms(p["qstat_x"]),
                        f"KV scan {_ms(p['baseline_kv_scan_nats_py'])}, "
                        f"python {_ms(p['baseline_python_c_pass'])}",
                        "-" if r is None else f"{r:.1f}",
                        "<=1 s @100k"))
            out.append(("  API GET history / qstat", str(k), _ms(p["api_get_history"]),
                        f"qstat (no -x) {_ms(p['qstat_no_x'])}", "", ""))

    pl = sc.get("payload")
    if pl:
        d = pl.get("dir_job")
        if d:
            out.append((f"6 {d['zipped_bytes'] // 1024} KiB dir job: submit->finished",
                        str(pl["repeats"]), _ms(d["submit_to_finished"]),
                        f"tiny job {_ms(d['baseline_tiny_job_submit_to_finished'])}, "
                        f"raw copy+run {_ms(d['baseline_raw_copy_and_run'])}",
                        f"{d['ratio_to_raw']:.1f}", ""))
        b = pl.get("big_output")
        if b:
            out.append((f"6 {b['mib']} MiB result upload", str(pl["repeats"]),
                        f"{b['upload_mib_per_s_best']:.0f} MiB/s",
                        f"raw httpx PUT {b['baseline_raw_put_mib_per_s_best']:.0f} MiB/s",
                        f"{b['ratio_to_raw_put']:.2f}", ""))

    sto = sc.get("storage")
    if sto:
        for key, label in (("submit_stream", "JetStream PKBS_SUBMIT"),
                           ("jobs_kv", "JetStream KV_PKBS_JOBS"), ("webdav", "WebDAV")):
            d = sto[key]
            r = d["last_to_second_third"]
            out.append((f"8 storage: {label} bytes", str(sto["jobs_submitted"]),
                        f"{d['last_third_mean'] / 1e6:.2f} MB (max {d['max'] / 1e6:.2f})",
                        f"2nd third {d['second_third_mean'] / 1e6:.2f} MB",
                        "-" if r is None else f"{r:.2f}",
                        "<=1.2" + _check(r is not None and r <= 1.2)))
        pj = sto["per_job"]
        out.append(("  bytes per kept job", "-",
                    f"payload msg {pj['submit_stream_bytes']}, KV {pj['jobs_kv_bytes']}, "
                    f"WebDAV {pj['webdav_bytes']}",
                    f"payload mean {sto['payload_bytes_mean']}", "", ""))

    res = sc.get("resources")
    if res:
        idle = res["rss_idle_kib"]
        peak: dict[str, int] = {}
        for key, val in res.items():
            if key.startswith("under_load_"):
                for name, kib in val["rss_peak_kib"].items():
                    peak[name] = max(peak.get(name, 0), kib)
        end = res.get("rss_end_kib", {})
        for name in sorted(idle):
            if name == "supervisor":
                continue
            out.append((f"7 RSS MiB {name}", "-",
                        f"idle {_mib(idle.get(name))} / load {_mib(peak.get(name))} / "
                        f"end {_mib(end.get(name))}", "", "", ""))
    return out


def table(result: dict[str, Any]) -> str:
    m = result["machine"]
    st = result["stack"]
    head = [
        f"pkbs bench {result['started']}  ({result['duration_s']:.0f} s)  "
        f"git {result.get('git', '?')}",
        f"machine: {m['cpu_count']} CPUs ({m.get('cpu_model')}), Python {m['python']}, "
        f"load {m['loadavg_start']} -> {m.get('loadavg_end')}",
        f"stack: {st['workers']} workers x {st['slots_per_worker']} slots "
        f"(baselines use {st['total_slots']} threads)",
    ]
    header = ("figure", "N", "pkbs", "baseline (same run)", "ratio", "target")
    body = rows(result)
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(6)]
    lines = [*head, ""]
    for r in [header, *body]:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        if r is header:
            lines.append("  ".join("-" * w for w in widths))
    profile = result.get("profile")
    if profile:
        lines += ["", *profile_lines(profile)]
    errors = result.get("errors")
    if errors:
        lines.append("")
        lines += [f"ERROR in {k}: {v}" for k, v in errors.items()]
    return "\n".join(lines)


def profile_lines(profile: dict[str, Any], top: int = 6) -> list[str]:
    lines = []
    for kind in ("cprofile", "py_spy"):
        data = profile.get(kind)
        if not data or "skipped" in data or "error" in data:
            continue
        lines.append(f"profile {kind}: HTTP batch N={data['n']}, "
                     f"{data['jobs_per_s_under_profiler']} jobs/s under the profiler")
        for name, summary in data.items():
            if not isinstance(summary, dict) or "self_top" not in summary:
                continue
            if name.startswith("worker") and name != "worker-1":
                continue
            lines.append(f"  {name} (CPU from /proc {summary.get('proc_cpu_s')} s) self time:")
            for row in summary["self_top"][:top]:
                lines.append(f"    {row[2]:5.1f}%  {row[0]}")
    imports = profile.get("qsub_imports")
    if imports:
        lines.append(f"qsub imports: {imports['imports_us_total'] / 1000:.1f} ms in total; "
                     "biggest: " + ", ".join(f"{n.strip()} {us / 1000:.1f} ms"
                                             for n, us in imports["cumulative_us_top"][:5]))
    return lines
