"""Runs tlsfuzzer scripts against running targets and compares each failed case with the
expected-failure table of docs/conformance.md.

conformance/scripts has one run per line: `TARGET SCRIPT [ARGS...]`, where TARGET names a
`--target NAME=[HOST:]PORT` (runs of targets not given are skipped, `--netns NAME=NS` runs a
target's scripts in that network namespace) and ARGS may hold `{name}` for a `--var name=value`. A script's summary
(`PASS: N`, `FAIL: M`, `FAILED:` and the case names) gives its cases; a script that ends without
a summary, or runs out of time, counts as one failed case named `<script did not finish>`.

The table rows are `| TARGET | SCRIPT | `CASE` | REASON |`; TARGET and CASE are shell patterns
(`*` matches anything), REASON must not be empty. Exit status 1 when a case failed that no row
names; a row whose case ran and passed is reported as a warning (the entry can go).
"""
import argparse
import fnmatch
import os
import re
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

UNFINISHED = "<script did not finish>"
TIMEOUT_S = 240
SEEDED = ("import random, runpy, sys; random.seed(1); m = sys.argv[1]; sys.argv = [m] + sys.argv[2:]; "
          "runpy.run_module(m, run_name='__main__', alter_sys=True)")


def parse_expected(path):
    """Rows of the table under the `## Expected failures` heading."""
    rows = []
    in_section = False
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.startswith("## "):
                in_section = line.strip().lower() == "## expected failures"
                continue
            if not in_section or not line.startswith("|"):
                continue
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            if len(cells) != 4 or set(cells[0]) <= set("-: ") or cells[0] == "target":
                continue
            target, script, case, reason = cells
            if not (case.startswith("`") and case.endswith("`")) or not reason:
                sys.exit(f"{path}:{lineno}: expected `| target | script | `case` | reason |`")
            rows.append({"target": target, "script": script, "case": case[1:-1], "reason": reason,
                         "line": lineno, "hit": False, "passed": []})
    return rows


def parse_runs(path, only):
    runs = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line and (not only or re.search(only, line)):
                words = shlex.split(line)
                runs.append((words[0], words[1], words[2:]))
    return runs


def summary(output):
    """(passed, failed case names, all case names) from a script's output, or None."""
    m = re.search(r"^PASS: (\d+)$", output, re.M)
    f = re.search(r"^FAIL: (\d+)$", output, re.M)
    if not m or not f:
        return None
    failed = re.findall(r"^\t'(.*)'$", output.split("\nFAILED:\n", 1)[1], re.M) \
        if "\nFAILED:\n" in output else []
    # Cases run, from the per-case lines the scripts print before each conversation.
    ran = set(re.findall(r"^(.+) \.\.\.$", output, re.M))
    return int(m.group(1)), failed, ran


def run_one(args, run):
    target, script, extra = run
    host, _, port = args.targets[target].rpartition(":")
    module = "tlsfuzzer._apps." + script.replace("-", "_")
    script_args = ["-h", host or "127.0.0.1", "-p", port] + [a.format(**args.vars) for a in extra]
    # A target in network namespaces (the inline engine's) is reached from its client namespace.
    netns = ["ip", "netns", "exec", args.netns[target]] if target in args.netns else []
    # A fixed seed: `-n` then samples the same cases every run, so the list names them exactly.
    argv = netns + [args.python, "-c", SEEDED, module] + script_args
    # PYTHONHASHSEED too: some scripts sample from sets, whose order follows string hashes.
    env = dict(os.environ, PYTHONPATH=args.fuzzer, PYTHONDONTWRITEBYTECODE="1", PYTHONHASHSEED="0")
    start = time.monotonic()
    try:
        p = subprocess.run(argv, cwd=args.fuzzer, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=TIMEOUT_S, check=False)
        out = p.stdout.decode("utf-8", "replace")
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode("utf-8", "replace") + f"\n(timed out after {TIMEOUT_S} s)\n"
    took = time.monotonic() - start
    name = f"{target}.{script}"
    with open(os.path.join(args.logs, name + ".log"), "w", encoding="utf-8") as f:
        f.write(" ".join(shlex.quote(a) for a in argv) + "\n\n" + out)
    return run, out, took


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fuzzer", required=True)
    ap.add_argument("--python", required=True)
    ap.add_argument("--scripts", required=True)
    ap.add_argument("--expected", required=True)
    ap.add_argument("--logs", required=True)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--only", default="")
    ap.add_argument("--target", action="append", default=[])
    ap.add_argument("--var", action="append", default=[])
    ap.add_argument("--netns", action="append", default=[], help="TARGET=NS: run its scripts in NS")
    args = ap.parse_args()
    args.targets = dict(t.split("=", 1) for t in args.target)
    args.vars = dict(v.split("=", 1) for v in args.var)
    args.netns = dict(n.split("=", 1) for n in args.netns)
    os.makedirs(args.logs, exist_ok=True)
    expected = parse_expected(args.expected)
    runs = parse_runs(args.scripts, args.only)
    for target in sorted({r[0] for r in runs} - set(args.targets)):
        print(f"conformance: target {target} not running, its scripts skipped")
    runs = [r for r in runs if r[0] in args.targets]

    def rows_for(target, script, case):
        return [r for r in expected if fnmatch.fnmatchcase(target, r["target"])
                and r["script"] == script and fnmatch.fnmatchcase(case, r["case"])]

    passed = failed = 0
    unexpected = []
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for (target, script, _), out, took in pool.map(lambda r: run_one(args, r), runs):
            s = summary(out)
            if s is None:
                s = (0, [UNFINISHED], {UNFINISHED})
            n_pass, fails, ran = s
            passed += n_pass
            failed += len(fails)
            surprise = []
            for case in fails:
                rows = rows_for(target, script, case)
                for r in rows:
                    r["hit"] = True
                if not rows:
                    surprise.append(case)
            for case in ran - set(fails):
                for r in rows_for(target, script, case):
                    r["passed"].append(f"{target} {script} {case!r}")
            state = "ok" if not surprise else "UNEXPECTED FAILURES"
            print(f"{target:15} {script:50} pass {n_pass:4} fail {len(fails):3} "
                  f"{took:6.1f} s  {state}", flush=True)
            if surprise:
                unexpected += [(target, script, c) for c in surprise]
                print("\n".join("    " + line for line in out.splitlines()[-150:]))
    for r in expected:
        for what in r["passed"]:
            print(f"warning: expected to fail but passed (docs/conformance.md line {r['line']}): "
                  f"{what}")
    for target, script, case in unexpected:
        print(f"unexpected failure: {target} {script} {case!r}")
    print(f"conformance: {passed} passed, {failed} failed"
          + (f" ({len(unexpected)} not on the expected list)" if unexpected else ""))
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
