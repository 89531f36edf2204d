"""`make bench`: every benchmark of this repository, small, in one run, and one
results table with each figure beside a raw ceiling measured in the same run.

In order: the raw ceilings of the host (``ceilings.py``), the inbound pipeline
without and with leads (``messaging_bench.py``), the REST API (``api_bench.py``),
one event fanned out to many sockets (``fanout_bench.py``), device
workers (``devices_bench.py``) and the send queue (``outbound_bench.py``); with
``--extras`` also the history import (``history_bench.py``). Each runs as a
subprocess with a timeout, with no Clarin setting of the caller's environment
(``benchenv``); each prints JSON, read through the key table below. A benchmark
that fails or times out is reported as failed in the table, the others still
run, and the exit status is 1.

Writes ``bench/results/latest.json`` (every benchmark's whole report, the host,
the commit) and ``bench/results/latest.md`` (the table), and prints the table;
``--readme`` also copies it into README.md between the ``bench-results`` markers.

    uv run python bench/run_all.py            # or: make bench BENCH_ARGS="--only ceilings,api"
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import benchenv

BENCH = benchenv.ROOT / "bench"
RESULTS = BENCH / "results"
README = benchenv.ROOT / "README.md"
README_BEGIN = "<!-- bench-results:begin (bench/run_all.py --readme writes this) -->"
README_END = "<!-- bench-results:end -->"

# Where each figure is read in a benchmark's JSON: the first path present wins
# (a benchmark's newer keys first, what it prints today after them).
KEYS: dict[str, list[tuple[str, ...]]] = {
    # messaging_bench --find-max (keys in bench/README.md)
    "pipeline_max": [("max_msg_s",)],
    "pipeline_p50": [("p50_ms",)],
    "pipeline_p99": [("p99_ms",)],
    "pipeline_rate": [("at80_target_msg_s",)],
    "pipeline_raw_insert": [("insert_rows_s",)],
    # fanout_bench
    "fanout_sockets": [("sockets",)],
    "fanout_p50": [("p50_ms",)],
    "fanout_p99": [("p99_ms",)],
    "fanout_ceiling_p50": [("ceiling_p50_ms",)],
    "fanout_ceiling_p99": [("ceiling_p99_ms",)],
    # devices_bench
    "devices_connect": [("connect_all_s",), ("time_to_all_connected_s",)],
    "devices_reconnect": [("reconnect_all_s",), ("reconnect_all_after_drop_s",)],
    "devices_rss": [("rss_per_device_kb",), ("rss_per_device_kib",)],
    "devices_connected": [("connected",)],
    "devices_ceiling_nats": [("ceiling_nats_s",)],
    "devices_ceiling_ops": [("ceiling_nats_ops",)],
    # outbound_bench
    "outbound_drain": [("drain_s",)],
    "outbound_drain_pace": [("drain_s_the_pace_allows",)],
    "outbound_cpu": [("worker_cpu_ms_per_send",)],
    "outbound_take_cpu": [("raw", "take_cpu_ms_per_msg")],
    "outbound_duplicates": [("duplicates",)],
    "outbound_out_of_order": [("out_of_order",)],
    # history_bench
    "history_per_s": [("import", "per_s"), ("import_per_s",)],
    "history_raw_per_s": [("raw_insert", "per_s"), ("raw_insert_per_s",)],
}


class MissingKey(KeyError):
    pass


def read(report: dict[str, Any], figure: str) -> Any:
    for path in KEYS[figure]:
        value: Any = report
        for key in path:
            if not isinstance(value, dict) or key not in value:
                break
            value = value[key]
        else:
            return value
    raise MissingKey(f"{figure}: none of {KEYS[figure]} in the report")


# ---- running one benchmark ---------------------------------------------------------


@dataclass
class Step:
    name: str
    script: str
    argv: list[str]
    timeout: float
    report: dict[str, Any] | None = None
    error: str | None = None
    seconds: float = 0.0


def last_json_object(stdout: str) -> dict[str, Any]:
    """The report a benchmark printed: its last line that is a JSON object, else the
    first JSON object spread over lines (``json.dumps(indent=2)``)."""
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                return value
    decoder = json.JSONDecoder()
    for start in (i for i, line in enumerate(stdout.splitlines()) if line == "{"):
        text = "\n".join(stdout.splitlines()[start:])
        try:
            value, _ = decoder.raw_decode(text)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    raise ValueError("no JSON report in its output")


def run_step(step: Step, log_dir: Path) -> Step:
    """Run the benchmark in a process group of its own (its services and servers
    with it), kill the group at the timeout."""
    cmd = [sys.executable, str(BENCH / step.script), *step.argv]
    print(f"[bench] {step.name}: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
    started = time.monotonic()
    with (log_dir / f"{step.name}.stderr.log").open("wb") as err:
        proc = subprocess.Popen(
            cmd,
            cwd=benchenv.ROOT,
            env=benchenv.clean_environ(),
            stdout=subprocess.PIPE,
            stderr=err,
            start_new_session=True,
        )
        try:
            out, _ = proc.communicate(timeout=step.timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                out, _ = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                out, _ = proc.communicate()
            step.error = f"timed out after {step.timeout:.0f} s"
    step.seconds = round(time.monotonic() - started, 1)
    (log_dir / f"{step.name}.stdout.log").write_bytes(out)
    if step.error is None and proc.returncode != 0:
        step.error = f"exit status {proc.returncode} (see {log_dir}/{step.name}.stderr.log)"
    if step.error is None:
        try:
            step.report = last_json_object(out.decode(errors="replace"))
        except ValueError as exc:
            step.error = str(exc)
    status = f"FAILED: {step.error}" if step.error else "ok"
    print(f"[bench] {step.name}: {status} in {step.seconds} s", file=sys.stderr, flush=True)
    return step


# ---- the table -----------------------------------------------------------------------


@dataclass
class Row:
    figure: str
    value: str
    ceiling: str = ""
    ratio: float | None = None
    target: str = ""
    passed: bool | None = None


@dataclass
class Table:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, step: Step | None, figure: str, build: Callable[[], Row]) -> None:
        """A row built from a benchmark's report, or one that says why there is none."""
        if step is None:
            return
        if step.error:
            self.rows.append(Row(figure, f"**FAILED** ({step.error})", passed=False))
            return
        try:
            self.rows.append(build())
        except MissingKey as exc:
            self.rows.append(Row(figure, f"**no figure** ({exc})", passed=False))
        except (TypeError, ValueError) as exc:  # e.g. null: not all devices connected
            self.rows.append(Row(figure, f"**no figure** ({exc})", passed=False))


def report_of(step: Step | None) -> dict[str, Any]:
    return (step.report or {}) if step is not None else {}


def num(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def ratio(value: float, ceiling: float) -> float | None:
    return round(value / ceiling, 3) if ceiling else None


def build_table(steps: dict[str, Step], args: argparse.Namespace) -> Table:
    table = Table()
    ceil = steps["ceilings"].report or {}
    pg, raw_nats = ceil.get("postgres", {}), ceil.get("nats", {})
    insert = float(pg.get("insert_unnest_per_s", 0))

    path, bound = ceil.get("nats_path", {}), ceil.get("bare_bound", {})
    if path and bound.get("per_s"):

        def bound_row() -> Row:
            return Row(
                "Bare bound of any inbound pipeline here: the NATS path alone plus the "
                "INSERT, no work between, msg/s",
                f"{num(bound['per_s'])} ({num(path['cpu_us_per_msg'], 1)} + "
                f"{num(pg['insert_cpu_us_per_row'], 1)} µs CPU per message, "
                f"{ceil['cpus']} CPUs)",
                f"{num(insert)} rows/s multi-row INSERT; the NATS path alone "
                f"{num(path['per_s'])} msg/s",
                ratio(float(bound["per_s"]), insert),
            )

        table.add(steps["ceilings"], "Bare bound of the inbound pipeline", bound_row)

    for leads, target in ((False, 0.5), (True, 0.35)):
        label = "with leads" if leads else "no leads"
        max_step = steps.get(f"pipeline_{'leads' if leads else 'noleads'}_max")
        at80_step = max_step
        if max_step is None:
            continue

        def max_row(step: Step = max_step, label: str = label, target: float = target) -> Row:
            report = step.report or {}
            value = float(read(report, "pipeline_max"))
            r = ratio(value, insert)
            own = ""
            with contextlib.suppress(MissingKey):
                rows = float(read(report, "pipeline_raw_insert"))
                own = f" (the bench's own rows after it: {num(rows)}, ratio {ratio(value, rows)})"
            if bound.get("per_s"):
                own += f"; {ratio(value, float(bound['per_s']))} of the bare bound"
            return Row(
                f"Inbound pipeline ({label}): max msg/s, to the WebSocket frame",
                num(value),
                f"{num(insert)} rows/s multi-row INSERT{own}",
                r,
                f"≥ {target} of INSERT",
                None if r is None else r >= target,
            )

        table.add(max_step, f"Inbound pipeline ({label}): max msg/s", max_row)
        if at80_step is None:
            continue

        def p99_row(step: Step = at80_step, label: str = label, leads: bool = leads) -> Row:
            report = step.report or {}
            p50, p99 = float(read(report, "pipeline_p50")), float(read(report, "pipeline_p99"))
            rate = float(read(report, "pipeline_rate"))
            lost = report.get("at80_phase", {}).get("lost_or_late", 0)
            late = f", **{lost} not delivered in time**" if lost else ""
            return Row(
                f"Inbound pipeline ({label}): p50 / p99 at 80 % of max ({num(rate)} msg/s)",
                f"{num(p50, 1)} / {num(p99, 1)} ms{late}",
                target="" if leads else "p99 < 250 ms",
                passed=None if leads else (p99 < 250 and not lost),
            )

        table.add(at80_step, f"Inbound pipeline ({label}): latency at 80 % of max", p99_row)

    def chats_row() -> Row:
        c = (steps["api"].report or {})["chats"]
        gw, direct = c["gateway"], c["messaging"]
        return Row(
            f"`GET /api/chats` through the gateway, req/s (p50 / p99), {c['concurrency']} clients",
            f"{num(gw['per_s'])} ({num(gw['p50_ms'], 1)} / {num(gw['p99_ms'], 1)} ms)",
            f"{num(direct['per_s'])} ({num(direct['p50_ms'], 1)} / "
            f"{num(direct['p99_ms'], 1)} ms) straight to messaging",
            ratio(gw["per_s"], direct["per_s"]),
        )

    def login_row() -> Row:
        login = (steps["api"].report or {})["login"]
        return Row(
            f"`POST /api/auth/login` req/s (p99), bcrypt cost {login['bcrypt_rounds']}",
            f"{num(login['per_s'], 2)} ({num(login['p99_ms'])} ms)",
            f"{num(login['hash_ceiling_per_s'], 2)} bcrypt checks/s alone "
            f"({num(login['hash_alone_per_s_per_core'], 2)} per core)",
            ratio(login["per_s"], login["hash_ceiling_per_s"]),
        )

    table.add(steps.get("api"), "`GET /api/chats` gateway vs messaging", chats_row)
    table.add(steps.get("api"), "`POST /api/auth/login`", login_row)

    fanout = steps.get("fanout")
    if fanout is not None:

        def fanout_row() -> Row:
            r = fanout.report or {}
            p50, p99 = float(read(r, "fanout_p50")), float(read(r, "fanout_p99"))
            c50, c99 = float(read(r, "fanout_ceiling_p50")), float(read(r, "fanout_ceiling_p99"))
            return Row(
                f"One event to {num(read(r, 'fanout_sockets'))} sockets: p50 / p99",
                f"{num(p50, 1)} / {num(p99, 1)} ms",
                f"{num(c50, 1)} / {num(c99, 1)} ms raw",
                ratio(p99, c99),
            )

        table.add(fanout, "One event fanned out", fanout_row)

    devices = steps.get("devices")

    def devices_row() -> Row:
        r = report_of(devices)
        return Row(
            f"{args.devices} devices on {args.workers} workers: all connected / all back "
            "after every connection dropped",
            f"{read(r, 'devices_connect')} s / {read(r, 'devices_reconnect')} s "
            f"({read(r, 'devices_connected')} connected)",
            f"{read(r, 'devices_ceiling_nats')} s: the workers' NATS operations per device"
            f" ({read(r, 'devices_ceiling_ops')}) done alone",
            ratio(float(read(r, "devices_connect")), float(read(r, "devices_ceiling_nats"))),
        )

    def rss_row() -> Row:
        r = report_of(devices)
        return Row("Worker RSS per connected device", f"{read(r, 'devices_rss')} KiB")

    table.add(devices, "Devices connected", devices_row)
    table.add(devices, "Worker RSS per device", rss_row)

    outbound = steps.get("outbound")

    def drain_row() -> Row:
        r = report_of(outbound)
        drain, pace = float(read(r, "outbound_drain")), float(read(r, "outbound_drain_pace"))
        dups, disorder = read(r, "outbound_duplicates"), read(r, "outbound_out_of_order")
        return Row(
            f"{num(args.sends)} queued sends over {args.send_devices} devices drained "
            f"(duplicates, out of order: {dups}, {disorder})",
            f"{num(drain, 1)} s",
            f"{num(pace, 1)} s the 1/s pace allows",
            ratio(drain, pace),
            "0 duplicates, 0 out of order",
            dups == 0 and disorder == 0,
        )

    def send_cpu_row() -> Row:
        r = report_of(outbound)
        cpu, take = float(read(r, "outbound_cpu")), float(read(r, "outbound_take_cpu"))
        return Row(
            "Worker CPU per send",
            f"{num(cpu, 3)} ms",
            f"{num(take, 3)} ms raw JetStream fetch(1) + ack",
            ratio(cpu, take),
        )

    table.add(outbound, "Queued sends drained", drain_row)
    table.add(outbound, "Worker CPU per send", send_cpu_row)

    history = steps.get("history")

    def history_row() -> Row:
        r = report_of(history)
        value, raw = float(read(r, "history_per_s")), float(read(r, "history_raw_per_s"))
        return Row(
            "History import, msg/s",
            num(value),
            f"{num(raw)} rows/s the same rows by multi-row INSERT",
            ratio(value, raw),
        )

    table.add(history, "History import", history_row)

    if pg and raw_nats:
        table.notes.append(
            f"Raw ceilings of this run ({num(pg['rows'])} `messaging.messages` rows, "
            f"{raw_nats['payload_bytes']}-byte NATS messages): PostgreSQL multi-row INSERT "
            f"(a transaction per {pg['batch']}) **{num(pg['insert_unnest_per_s'])} rows/s**, "
            f"COPY **{num(pg['copy_per_s'])} rows/s**; NATS core publish "
            f"**{num(raw_nats['core_publish_per_s'])} msgs/s**, JetStream publish acked one by "
            f"one **{num(raw_nats['js_publish_sync_per_s'])} msgs/s**, pipelined "
            f"**{num(raw_nats['js_publish_async_per_s'])} msgs/s**."
        )
    if path and bound.get("per_s"):
        table.notes.append(
            "Bare bound: the pipeline's NATS path alone (`bench/ceilings.py`: publish "
            "pipelined with a message id into a file-backed stream, a durable pull consumer "
            f"fetching {num(path['batch'])} at a time that republishes each message into a "
            "second stream and acks each one, a core-NATS subscriber; three processes like "
            f"the worker, messaging and the gateway) ran **{num(path['per_s'])} msg/s** and "
            f"took **{num(path['cpu_us_per_msg'], 1)} µs** of the machine's CPU per message; "
            f"the multi-row INSERT **{num(pg['insert_cpu_us_per_row'], 1)} µs** per row. "
            f"{ceil['cpus']} CPUs ÷ their sum = **{num(bound['per_s'])} msg/s**: what a "
            "pipeline that only moved each message over that path and inserted its row could "
            "reach, before parsing, chats, the outbox or the WebSocket frame."
        )
    elif steps["ceilings"].error:
        table.notes.append(f"Raw ceilings: **FAILED** ({steps['ceilings'].error}).")
    return table


def markdown(table: Table, meta: dict[str, Any], steps: dict[str, Step]) -> str:
    host = meta["host"]
    lines = [
        f"Measured {meta['date']} on `{host['hostname']}` ({host['cpu_model']}, "
        f"{host['cores']} cores, load average {host['loadavg_start']} at the start, "
        f"{host['loadavg_end']} at the end), commit `{meta['commit']}`, by `make bench` "
        f"in {num(meta['seconds'])} s.",
        "",
        "| figure | value | raw ceiling, same run | ratio | target | pass |",
        "| --- | ---: | ---: | ---: | --- | --- |",
    ]
    for row in table.rows:
        passed = {True: "pass", False: "**FAIL**", None: ""}[row.passed]
        ratio_cell = "" if row.ratio is None else f"{row.ratio:g}"
        lines.append(
            f"| {row.figure} | {row.value} | {row.ceiling} | {ratio_cell} | {row.target} | "
            f"{passed} |"
        )
    lines += ["", *(f"* {note}" for note in table.notes)]
    lines.append(
        "* ratio = value ÷ ceiling: for a rate the share of the ceiling reached, for a "
        "time or a cost how many times the ceiling it takes."
    )
    timing = ", ".join(
        f"{s.name} {num(s.seconds)} s" + (" (failed)" if s.error else "") for s in steps.values()
    )
    lines.append(f"* Benchmarks run: {timing}.")
    return "\n".join(lines) + "\n"


# ---- the run -------------------------------------------------------------------------


def host_info() -> dict[str, Any]:
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "hostname": platform.node(),
        "cpu_model": model,
        "cores": os.cpu_count(),
        "loadavg_start": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
    }


def git_commit() -> str:
    def git(*argv: str) -> str:
        return subprocess.run(
            ["git", *argv], cwd=benchenv.ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def pipeline_common(args: argparse.Namespace, leads: bool) -> list[str]:
    common = ["--json", "--database-url", args.database_url]
    return common if leads else [*common, "--no-leads"]


def pipeline_step(args: argparse.Namespace, leads: bool) -> Step:
    """As fast as it goes, then at 80 % of that, in one run (`--find-max`)."""
    name = f"pipeline_{'leads' if leads else 'noleads'}_max"
    argv = ["--find-max", "--messages", str(args.pipeline_messages), *pipeline_common(args, leads)]
    return Step(name, "messaging_bench.py", argv, 900)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", default=benchenv.DEFAULT_POSTGRES)
    parser.add_argument(
        "--only", default="", help="comma-separated: ceilings,pipeline,api,fanout,devices,outbound"
    )
    parser.add_argument("--extras", action="store_true", help="also history_bench, small")
    parser.add_argument("--pipeline-messages", type=int, default=20_000)
    parser.add_argument("--devices", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sends", type=int, default=2000)
    parser.add_argument("--send-devices", type=int, default=100)
    parser.add_argument("--out", default=str(RESULTS), help="where latest.json/.md go")
    parser.add_argument("--readme", action="store_true", help="copy the table into README.md")
    args = parser.parse_args()
    benchenv.isolate()
    only = {s for s in args.only.split(",") if s}

    def wanted(group: str) -> bool:
        return not only or group in only

    out_dir = Path(args.out)
    log_dir = out_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "host": host_info(),
        "commit": git_commit(),
    }
    started = time.monotonic()
    db = ["--database-url", args.database_url]
    pg = ["--pg", args.database_url]
    steps: dict[str, Step] = {}

    def run(step: Step) -> Step:
        steps[step.name] = run_step(step, log_dir)
        return steps[step.name]

    # the ceilings always: every ratio needs them
    run(Step("ceilings", "ceilings.py", ["--json", *db], 300))
    if wanted("pipeline"):
        for leads in (False, True):
            run(pipeline_step(args, leads))
    if wanted("api"):
        run(Step("api", "api_bench.py", ["--json", *db], 600))
    if wanted("fanout"):
        run(Step("fanout", "fanout_bench.py", ["--json", "--sockets", "2000"], 600))
    if wanted("devices"):
        argv = ["--devices", str(args.devices), "--workers", str(args.workers), "--drop-all", *pg]
        argv.append("--json")
        run(Step("devices", "devices_bench.py", argv, 600))
    if wanted("outbound"):
        argv = ["--sends", str(args.sends), "--devices", str(args.send_devices), "--json", *pg]
        run(Step("outbound", "outbound_bench.py", argv, 600))
    if args.extras:
        argv = ["--messages", "20000", "--chats", "100", "--json", *db]
        run(Step("history", "history_bench.py", argv, 600))

    meta["seconds"] = round(time.monotonic() - started)
    meta["host"]["loadavg_end"] = round(os.getloadavg()[0], 2)
    table = build_table(steps, args)
    text = markdown(table, meta, steps)
    failed = [s.name for s in steps.values() if s.error]
    result = {
        **meta,
        "failed": failed,
        "rows": [row.__dict__ for row in table.rows],
        "notes": table.notes,
        "benchmarks": {
            s.name: {
                "argv": [s.script, *s.argv],
                "seconds": s.seconds,
                "error": s.error,
                "report": s.report,
            }
            for s in steps.values()
        },
    }
    (out_dir / "latest.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    (out_dir / "latest.md").write_text(text)
    if args.readme:
        readme = README.read_text()
        begin, end = readme.find(README_BEGIN), readme.find(README_END)
        if begin < 0 or end < begin:
            print(f"[bench] README.md has no {README_BEGIN} … {README_END}", file=sys.stderr)
            return 1
        README.write_text(readme[: begin + len(README_BEGIN)] + "\n" + text + readme[end:])
    print(text)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
