"""The markdown table and the ratio line."""

# (result key, column title, format, lower is better for the ratio line under this name)
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


def resumed_all(row):
    """Whether every connection of the resumed phase really resumed."""
    return row.get("resumed_ok") is not None and row.get("resumed_count") == row.get("resumed_ok")


def _valid(row, key):
    """A value that may stand in the comparison: measured, and for resumption really resumed."""
    if row.get(key) is None:
        return False
    if key == "resumed_cpu_ms" and not resumed_all(row):
        return False
    return True


def notes(row):
    out = []
    if row.get("full_check"):
        out.append(row["full_check"])
    if row.get("resumed_check"):
        check = row["resumed_check"]
        if not resumed_all(row):
            check += " (does NOT resume: resumed columns are full handshakes, left out of the ratios)"
        out.append(check)
    if row.get("keepalive_note") and not row["keepalive_note"].endswith("connect 0, read 0, write 0, timeout 0"):
        out.append(row["keepalive_note"])
    if row.get("suite"):
        out.append(f"{row['suite']} {row['group']}")
    for phase, error in row.get("errors", []):
        out.append(f"{phase} FAILED: {error}")
    return "; ".join(out)


def table(rows):
    """rows: [(name, dict)]; one markdown table, a column per measurement, plus checks."""
    head = ["terminator"] + [c[1] for c in COLUMNS] + ["checks"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * len(COLUMNS) + ["---"]) + "|"]
    for name, row in rows:
        cells = [name]
        for key, _, fmt, _ in COLUMNS:
            value = row.get(key)
            cells.append("—" if value is None else fmt.format(value))
        cells.append(notes(row))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ratios(rows, subject="tlsgate"):
    """(best-peer line, ratio line): subject ÷ the lowest peer value, per CPU/memory column."""
    mine = dict(rows).get(subject, {})
    peers = [(n, r) for n, r in rows if n != subject]
    best_parts, ratio_parts = [], []
    for key, _, _, ratio_name in COLUMNS:
        if ratio_name is None:
            continue
        candidates = [(r[key], n) for n, r in peers if _valid(r, key)]
        if not candidates or not _valid(mine, key):
            best_parts.append(f"{ratio_name}=n/a")
            ratio_parts.append(f"{ratio_name}=n/a")
            continue
        best, best_name = min(candidates)
        best_parts.append(f"{ratio_name}={best_name}")
        ratio_parts.append(f"{ratio_name}={mine[key] / best:.2f}" if best > 0 else f"{ratio_name}=n/a")
    return "best peers: " + " ".join(best_parts), "ratios vs best peer: " + " ".join(ratio_parts)
