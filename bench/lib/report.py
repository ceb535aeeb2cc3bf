"""Rounds folded into one row per terminator, the markdown table and the ratio line."""

import statistics

# (result key, column title, format, name in the ratio line or None for rates)
COLUMNS = [
    ("full_cpu_ms", "full_handshake_cpu_ms", "{:.3f}", "full_handshake_cpu"),
    ("full_cps", "full conns/s", "{:.0f}", None),
    ("resumed_cpu_ms", "resumed_cpu_ms", "{:.3f}", "resumed_handshake_cpu"),
    ("resumed_cps", "resumed conns/s", "{:.0f}", None),
    ("keepalive_cpu_us", "keepalive_cpu_us", "{:.1f}", "keepalive_cpu"),
    ("keepalive_rps", "req/s", "{:.0f}", None),
    ("bulk_cpu_s_per_gib", "bulk_cpu_s_per_GiB", "{:.3f}", "bulk_cpu"),
    ("bulk_mb_s", "MB/s", "{:.0f}", None),
    ("idle_kib", "idle_KiB", "{:.1f}", "idle_rss"),
]

# How rounds combine. Other work on the machine only ever adds CPU time and takes throughput
# away, so the least CPU and the highest rate of the rounds are the least disturbed; memory is
# not disturbed that way and takes the median.
FOLD = {
    "full_cpu_ms": min,
    "resumed_cpu_ms": min,
    "keepalive_cpu_us": min,
    "bulk_cpu_s_per_gib": min,
    "full_cps": max,
    "resumed_cps": max,
    "keepalive_rps": max,
    "bulk_mb_s": max,
    "idle_kib": statistics.median,
    "full_ok": sum,
    "full_resumed": sum,
    "full_hrr": sum,
    "resumed_ok": sum,
    "resumed_count": sum,
}

# The system (kernel) part of each CPU column, taken from the same round as the column's value.
SYS_OF = {
    "full_cpu_ms": "full_sys_ms",
    "resumed_cpu_ms": "resumed_sys_ms",
    "keepalive_cpu_us": "keepalive_sys_us",
    "bulk_cpu_s_per_gib": "bulk_sys_s_per_gib",
}

CLEAN_WRK = "connect 0, read 0, write 0, timeout 0"


def fold(rounds):
    """One row from the rows of several rounds of one terminator."""
    row = {"rounds": len(rounds), "errors": []}
    for key, how in FOLD.items():
        values = [r[key] for r in rounds if r.get(key) is not None]
        if values:
            row[key] = how(values)
    for key, sys_key in SYS_OF.items():
        measured = [r for r in rounds if r.get(key) is not None and r.get(sys_key) is not None]
        if measured:
            row[sys_key] = min(measured, key=lambda r: r[key])[sys_key]
    for r in rounds:
        row["errors"] += r.get("errors", [])
        for key in ("suite", "group", "bulk_suite"):
            if row.get(key) is None:
                row[key] = r.get(key)
        if r.get("keepalive_socket_errors") not in (None, "", CLEAN_WRK):
            row.setdefault("wrk_errors", []).append(r["keepalive_socket_errors"])
    return row


def resumed_all(row):
    """Whether every connection of the resumed phase really resumed."""
    return bool(row.get("resumed_ok")) and row.get("resumed_count") == row.get("resumed_ok")


def _valid(row, key):
    """A value that may stand in the comparison: measured, and for resumption really resumed."""
    if row.get(key) is None:
        return False
    if key == "resumed_cpu_ms" and not resumed_all(row):
        return False
    return True


def checks(row):
    """The checks column: resumption counts, the negotiated parameters, anything that failed."""
    out = []
    if row.get("full_ok") is not None:
        check = f"full: {row['full_resumed']} of {row['full_ok']} resumed"
        if row.get("full_hrr"):
            check += f", {row['full_hrr']} with HelloRetryRequest"
        out.append(check)
    if row.get("resumed_ok") is not None:
        check = f"resumed: {row['resumed_count']} of {row['resumed_ok']} resumed"
        if not resumed_all(row):
            check += " (does NOT resume every session: resumed columns left out of the ratios)"
        out.append(check)
    for e in row.get("wrk_errors", []):
        out.append(f"wrk socket errors: {e}")
    if row.get("suite"):
        out.append(f"handshakes: {row['suite']} {row['group']}")
    if row.get("bulk_suite"):
        out.append(f"bulk: {row['bulk_suite']} (the only suite offered)")
    for phase, error in row.get("errors", []):
        out.append(f"{phase} FAILED: {error}")
    return "; ".join(out)


def table(rows):
    """rows: [(name, row)]; one markdown table, a column per measurement, plus the checks."""
    head = ["terminator"] + [c[1] for c in COLUMNS] + ["checks"]
    lines = [
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---"] + ["---:"] * len(COLUMNS) + ["---"]) + "|",
    ]
    for name, row in rows:
        cells = [name]
        for key, _, fmt, _ in COLUMNS:
            value = row.get(key)
            cells.append("—" if value is None else fmt.format(value))
        cells.append(checks(row))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _per_round(rounds, key, value_key, subject):
    """[(ratio, best peer)] for each round in which the subject and a peer have a valid `key`:
    the subject's `value_key` ÷ the lowest `key` of the peers in that same round."""
    out = []
    for r, mine in enumerate(rounds.get(subject, [])):
        candidates = [
            (rows[r][key], name)
            for name, rows in rounds.items()
            # tlsgate's own variants (tlsgate-ktls) are not peers.
            if not name.startswith("tlsgate") and r < len(rows) and _valid(rows[r], key)
        ]
        if candidates and _valid(mine, key) and mine.get(value_key) is not None:
            best, best_name = min(candidates)
            if best > 0:
                out.append((mine[value_key] / best, best_name))
    return out


def ratios(rounds, subject="tlsgate"):
    """(per-round line, best-peer line, ratio line). Each round measures every terminator's
    phase within seconds of the others' (bench.run_round), so a ratio is taken within a round
    — the subject against that round's best peer — and the ratio line gives the median of the
    rounds, which one unusually fast or slow measurement cannot move."""
    per_parts, best_parts, ratio_parts = [], [], []
    for key, _, _, ratio_name in COLUMNS:
        if ratio_name is None:
            continue
        pairs = _per_round(rounds, key, key, subject)
        if not pairs:
            per_parts.append(f"{ratio_name}=n/a")
            best_parts.append(f"{ratio_name}=n/a")
            ratio_parts.append(f"{ratio_name}=n/a")
            continue
        per_parts.append(f"{ratio_name}=" + "/".join(f"{x:.2f}" for x, _ in pairs))
        best_parts.append(f"{ratio_name}=" + "/".join(n for _, n in pairs))
        ratio_parts.append(f"{ratio_name}={statistics.median(x for x, _ in pairs):.2f}")
    return (
        "per round: " + " ".join(per_parts),
        "best peers: " + " ".join(best_parts),
        "ratios vs best peer: " + " ".join(ratio_parts),
    )


def kernel_table(rows):
    """The system-time part of each CPU column: how much of it is the kernel's work (system
    calls, loopback TCP, wakeups of the peers), which no user-space change can remove."""
    head = ["terminator"] + [f"{title} (system part)" for key, title, _, _ in COLUMNS if key in SYS_OF]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for name, row in rows:
        cells = [name]
        for key, _, fmt, _ in COLUMNS:
            if key not in SYS_OF:
                continue
            total, part = row.get(key), row.get(SYS_OF[key])
            if total is None or part is None:
                cells.append("—")
            else:
                cells.append(f"{fmt.format(part)} ({100 * part / total:.0f} %)" if total > 0 else fmt.format(part))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def user_ratios(rounds, subject="tlsgate"):
    """Per CPU column: the subject's user-space time (total − system) ÷ the least user-space
    time of the round's peers (median of the rounds) — what user-space work alone compares
    to, where the kernel's loopback work puts a floor under the whole. The peer with the least
    user space need not be the best peer of the ratio line (one that spends more in the
    kernel may spend less in user space), so the line also names it, and gives the ratio
    against the best peer's own user space after `/`."""
    parts = []
    for key, _, _, ratio_name in COLUMNS:
        if key not in SYS_OF:
            continue
        sys_key = SYS_OF[key]

        def user(row):
            if not _valid(row, key) or row.get(sys_key) is None:
                return None
            return row[key] - row[sys_key]

        least, of_best, names = [], [], []
        for r, mine in enumerate(rounds.get(subject, [])):
            peers = [
                (name, rows[r])
                for name, rows in rounds.items()
                if not name.startswith("tlsgate") and r < len(rows) and user(rows[r]) is not None
            ]
            m = user(mine)
            if not peers or m is None:
                continue
            u, name = min((user(row), name) for name, row in peers)
            best = min(peers, key=lambda p: p[1][key])
            if u > 0:
                least.append(m / u)
                names.append(name)
            if user(best[1]) > 0:
                of_best.append(m / user(best[1]))
        value = f"{statistics.median(least):.2f}" if least else "n/a"
        if of_best:
            value += f"/{statistics.median(of_best):.2f}"
        if names:
            value += f" ({'/'.join(names)})"
        parts.append(f"{ratio_name}={value}")
    return "user space alone vs the least user space of a peer (/ vs the best peer's): " + " ".join(parts)


def kernel_floor(rounds, subject="tlsgate"):
    """Per CPU column: the subject's system time alone ÷ the round's best peer's total (median
    of the rounds) — the ratio the subject would reach with no user-space time at all."""
    parts = []
    for key, _, _, ratio_name in COLUMNS:
        if key not in SYS_OF:
            continue
        pairs = _per_round(rounds, key, SYS_OF[key], subject)
        value = f"{statistics.median(x for x, _ in pairs):.2f}" if pairs else "n/a"
        parts.append(f"{ratio_name}={value}")
    return "system time alone vs best peer: " + " ".join(parts)
