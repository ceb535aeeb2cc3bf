"""The medians of several runs of crates/inline/benches/record_path.rs, for bench/inline.sh.

Reads the runs' lines on stdin (`cipher=… bytes=… seal_mb_s=… … raw_mb_s=…`, one line per cipher
and size per run) and prints one line per cipher and size, in the order first seen: each MB/s
field's median over the runs, `seal_raw=` the median of each run's own seal / raw with
`seal_raw_min=` and `seal_raw_max=` beside it, `extra_ns=` the median of each run's nanoseconds
per record that the engine's seal takes beyond raw's, and `runs=`.

Why the extra in nanoseconds: it is what the engine adds per record, which stays the same when
aws-lc seals on other code (its AVX rather than its AVX-512 AES-GCM), while seal / raw moves with
raw's speed (docs/benchmarks.md, "Inline engine record path").

Why runs and not one: each run is a process of its own, and where the kernel places its stack
(address space randomisation) makes one run's seal and raw each several percent faster or
slower, independently of each other (docs/benchmarks.md, "Inline engine record path"): one run's
seal / raw is the ratio at one placement, the median over runs the one another machine sees.
"""

import statistics
import sys

FIELDS = ("seal_mb_s", "open_mb_s", "cut_open_mb_s", "aead_mb_s", "raw_mb_s")


def parse(line):
    return dict(part.split("=", 1) for part in line.split())


def ns_per_record(size, mb_s):
    """MB/s is bytes per microsecond: the nanoseconds one record of `size` bytes takes."""
    return int(size) * 1000 / float(mb_s)


def main():
    runs = {}
    for line in sys.stdin:
        if not line.startswith("cipher="):
            continue
        rec = parse(line)
        runs.setdefault((rec["cipher"], rec["bytes"]), []).append(rec)
    for (cipher, size), recs in runs.items():
        ratios = [float(r["seal_mb_s"]) / float(r["raw_mb_s"]) for r in recs]
        extras = [ns_per_record(size, r["seal_mb_s"]) - ns_per_record(size, r["raw_mb_s"]) for r in recs]
        out = [f"cipher={cipher}", f"bytes={size}"]
        out += [f"{f}={statistics.median(float(r[f]) for r in recs):.0f}" for f in FIELDS]
        out += [
            f"seal_raw={statistics.median(ratios):.3f}",
            f"seal_raw_min={min(ratios):.3f}",
            f"seal_raw_max={max(ratios):.3f}",
            f"extra_ns={statistics.median(extras):.1f}",
            f"runs={len(recs)}",
        ]
        print(" ".join(out))


if __name__ == "__main__":
    main()
