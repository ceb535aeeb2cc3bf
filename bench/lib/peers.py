"""The terminators under test and the backend behind them: configs from bench/peers/*.in, command
lines, and version strings for the report."""

import os
import re
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
PEERS_DIR = os.path.join(os.path.dirname(HERE), "peers")
NGINX_MODULES = "/usr/lib/nginx/modules"


def render(template, out_path, values):
    """Copies bench/peers/<template> to out_path with every @NAME@ replaced from values."""
    with open(os.path.join(PEERS_DIR, template)) as f:
        text = f.read()
    for key, value in values.items():
        text = text.replace(f"@{key}@", str(value))
    left = re.findall(r"@[A-Z_]+@", text)
    if left:
        raise RuntimeError(f"{template}: no value for {', '.join(sorted(set(left)))}")
    with open(out_path, "w") as f:
        f.write(text)
    return out_path


def backend_argv(env):
    """The plaintext nginx every terminator relays to (on loopback unless env has BACKEND_HOST)."""
    values = {"BACKEND_HOST": "127.0.0.1", **env}
    conf = render("backend-nginx.conf.in", os.path.join(env["DIR"], "backend-nginx.conf"), values)
    return ["nginx", "-p", env["DIR"] + "/", "-c", conf, "-e", os.path.join(env["DIR"], "backend-nginx.error.log")]


def _tlsgate(env):
    return [
        env["TLSGATE"],
        "--workers", "1",
        "--log-level", "warn",
        "terminate",
        "--listen", f"{env.get('LISTEN_HOST', '127.0.0.1')}:{env['LISTEN_PORT']}",
        "--cert", env["CERT"],
        "--key", env["KEY"],
        "--backend", f"{env.get('BACKEND_HOST', '127.0.0.1')}:{env['BACKEND_PORT']}",
    ]


def _tlsgate_ktls(env):
    """tlsgate with the record layer in the kernel (kernel TLS, docs/ktls.md)."""
    return _tlsgate(env) + ["--ktls", "on"]


def ktls_available():
    """Whether this kernel has the tls ULP: listed, or a module it can load."""
    try:
        with open("/proc/sys/net/ipv4/tcp_available_ulp") as f:
            if "tls" in f.read().split():
                return True
        with open(f"/lib/modules/{os.uname().release}/modules.dep") as f:
            return "net/tls/tls.ko" in f.read()
    except OSError:
        return False


def skipped():
    """{name: why} for the terminators this machine cannot run."""
    if ktls_available():
        return {}
    return {"tlsgate-ktls": "this kernel has no tls ULP (kernel TLS: CONFIG_TLS)"}


def _haproxy(env):
    conf = render("haproxy.cfg.in", os.path.join(env["DIR"], "haproxy.cfg"), env)
    return ["haproxy", "-db", "-f", conf]


def _nginx_stream(env):
    conf = render("nginx-stream.conf.in", os.path.join(env["DIR"], "nginx-stream.conf"), env)
    return ["nginx", "-p", env["DIR"] + "/", "-c", conf, "-e", os.path.join(env["DIR"], "nginx-stream.error.log")]


def _hitch(env):
    os.makedirs(os.path.join(env["DIR"], "hitch-ocsp"), exist_ok=True)
    conf = render("hitch.conf.in", os.path.join(env["DIR"], "hitch.conf"), env)
    return ["hitch", "--config", conf]


def _stunnel(env):
    conf = render("stunnel.conf.in", os.path.join(env["DIR"], "stunnel.conf"), env)
    return ["stunnel4", conf]


# (name, how to start it); tlsgate first, then the peers it is compared with.
TERMINATORS = [
    ("tlsgate", _tlsgate),
    ("tlsgate-ktls", _tlsgate_ktls),
    ("haproxy", _haproxy),
    ("nginx-stream", _nginx_stream),
    ("hitch", _hitch),
    ("stunnel", _stunnel),
]


def _first_line(argv, pattern=None):
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unknown ({e})"
    lines = (r.stdout + r.stderr).splitlines()
    for line in lines:
        if pattern is None or re.search(pattern, line):
            return line.strip()
    return lines[0].strip() if lines else "unknown"


def versions(tlsgate_bin, repo):
    """One line per program, for the report."""
    describe = subprocess.run(
        ["git", "-C", repo, "describe", "--always", "--dirty", "--tags"], capture_output=True, text=True
    ).stdout.strip()
    return {
        "tlsgate": f"{_first_line([tlsgate_bin, '--version'])} (git {describe or 'unknown'})",
        "haproxy": _first_line(["haproxy", "-v"], r"version"),
        "nginx": _first_line(["nginx", "-v"]),
        "hitch": _first_line(["hitch", "--version"], r"hitch"),
        "stunnel": _first_line(["stunnel4", "-version"], r"^stunnel"),
        "openssl": _first_line(["openssl", "version"]),
        "wrk": _first_line(["wrk", "-v"], r"wrk"),
        "kernel": os.uname().release,
        "cpu": _first_line(["lscpu"], r"Model name").split(":", 1)[-1].strip(),
    }
