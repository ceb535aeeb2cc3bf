//! The .deb: built by packaging/deb/build.sh around this test's binary, installed with dpkg (the
//! tlsgate user, the unit, the config as a conffile, a placeholder certificate only tlsgate can
//! read), the unit verified by systemd-analyze, then the service run the way its unit says —
//! ExecStartPre and ExecStart, as its User= with its capabilities — inside a network namespace in
//! front of the built-in backend on the port the default config names, and reached with curl;
//! finally purged. A guard purges and removes what the test made even when it fails.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use tlsgate_testkit::clients::describe;
use tlsgate_testkit::netns::Netns;
use tlsgate_testkit::process::Tlsgate;

const BIN: &str = env!("CARGO_BIN_EXE_tlsgate");
const UNIT: &str = "/usr/lib/systemd/system/tlsgate.service";
const CONFIG: &str = "/etc/tlsgate/tlsgate.toml";

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"))
}

fn must(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(out.status.success(), "{program} {args:?}: {}", describe(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn available(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Undoes the installation whatever happens: purges the package, and removes the user and group
/// when the package made them.
struct Installed {
    user_existed: bool,
    group_existed: bool,
}

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = run("dpkg", &["--purge", "tlsgate"]);
        if !self.user_existed {
            let _ = run("userdel", &["tlsgate"]);
        }
        if !self.group_existed && run("getent", &["group", "tlsgate"]).status.success() {
            let _ = run("groupdel", &["tlsgate"]);
        }
    }
}

/// The `[Service]` settings of a unit file, in order (a key may repeat).
fn service_settings(unit: &str) -> Vec<(String, String)> {
    let mut in_service = false;
    let mut settings = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            in_service = line == "[Service]";
        } else if in_service && !line.starts_with('#') {
            if let Some((k, v)) = line.split_once('=') {
                settings.push((k.to_string(), v.to_string()));
            }
        }
    }
    settings
}

/// A command line of the unit run as systemd would: as User=/Group= with their groups, the
/// ambient and bounding capabilities it names, no new privileges; inside `ns`.
fn as_the_unit(ns: &Netns, settings: &[(String, String)], line: &str) -> Command {
    let get = |key: &str| settings.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    let mut args = vec!["--init-groups".to_string()];
    if let Some(user) = get("User") {
        args.push(format!("--reuid={user}"));
    }
    if let Some(group) = get("Group") {
        args.push(format!("--regid={group}"));
    }
    let caps = |key: &str| -> Vec<String> {
        get(key)
            .unwrap_or_default()
            .split_whitespace()
            .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
            .collect()
    };
    // Ambient capabilities must be inheritable too.
    let ambient = caps("AmbientCapabilities");
    args.push(format!("--inh-caps=-all{}", ambient.iter().map(|c| format!(",{c}")).collect::<String>()));
    if !ambient.is_empty() {
        args.push(format!("--ambient-caps={}", ambient.join(",")));
    }
    args.push(format!(
        "--bounding-set=-all{}",
        caps("CapabilityBoundingSet").iter().map(|c| format!(",{c}")).collect::<String>()
    ));
    if get("NoNewPrivileges").as_deref() == Some("yes") {
        args.push("--no-new-privs".into());
    }
    args.push("--".into());
    args.extend(line.split_whitespace().map(str::to_string));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ns.command("setpriv", &args)
}

fn status_field(pid: u32, key: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(&format!("{key}:"))).unwrap();
    line[key.len() + 1..].trim().to_string()
}

#[test]
fn deb_installs_runs_and_purges() {
    for tool in ["dpkg", "dpkg-deb"] {
        if !available(tool) {
            println!("skipped: {tool} is not installed (not a Debian system)");
            return;
        }
    }
    let repo = tlsgate_testkit::docs::repo_root();
    let out_dir = tempfile::tempdir().unwrap();
    let deb =
        must(repo.join("packaging/deb/build.sh").to_str().unwrap(), &[BIN, out_dir.path().to_str().unwrap()]);
    let deb = deb.trim();
    assert!(deb.ends_with(".deb") && Path::new(deb).exists(), "build.sh printed {deb:?}");

    let _installed = Installed {
        user_existed: run("getent", &["passwd", "tlsgate"]).status.success(),
        group_existed: run("getent", &["group", "tlsgate"]).status.success(),
    };
    must("dpkg", &["-i", deb]);

    // What dpkg put in place, and what the postinst made.
    for file in [
        "/usr/bin/tlsgate",
        UNIT,
        CONFIG,
        "/usr/share/doc/tlsgate/copyright",
        "/usr/share/doc/tlsgate/LICENSE",
    ] {
        assert!(Path::new(file).is_file(), "{file} not installed");
    }
    assert!(must("/usr/bin/tlsgate", &["--version"]).starts_with("tlsgate "));
    let sections = must("readelf", &["-S", "/usr/bin/tlsgate"]);
    assert!(!sections.contains(".symtab") && !sections.contains(".debug_info"), "binary not stripped");
    let conffiles = must("dpkg-query", &["-W", "-f=${Conffiles}", "tlsgate"]);
    assert!(conffiles.contains(CONFIG), "config not a conffile: {conffiles:?}");
    let passwd = must("getent", &["passwd", "tlsgate"]);
    let fields: Vec<&str> = passwd.trim().split(':').collect();
    let uid: u32 = fields[2].parse().unwrap();
    assert!(uid < 1000 && fields[6].ends_with("nologin"), "not a system user: {passwd}");
    let key = must("stat", &["-c", "%a %U %G", "/etc/tlsgate/tlsgate.key"]);
    assert_eq!(key.trim(), "600 tlsgate tlsgate");

    if available("systemd-analyze") {
        let verify = run("systemd-analyze", &["verify", UNIT]);
        assert!(
            verify.status.success() && verify.stderr.is_empty(),
            "systemd-analyze verify: {}",
            describe(&verify)
        );
    } else {
        println!("systemd-analyze verify skipped: systemd-analyze is not installed");
    }

    // The service as its unit runs it, in a namespace of its own, with the backend the default
    // config expects.
    let config = tlsgate_config::Config::load(Path::new(CONFIG)).expect("default config loads");
    let listener = &config.terminate.as_ref().expect("a terminate section").listener[0];
    let backend = listener.route[0].backends[0].to_string();
    let port = listener.listen.port();
    let admin = config.admin.as_ref().expect("an admin listener").listen;
    let ns = Netns::new("pkg");
    let backend_proc = Tlsgate::start_command(
        ns.command("/usr/bin/tlsgate", &["backend", "--listen", &backend, "--name", "behind the package"]),
    );
    backend_proc.proc.wait_for(&["backend listening"], Duration::from_secs(30));

    let settings = service_settings(&std::fs::read_to_string(UNIT).unwrap());
    let get = |key: &str| settings.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    assert_eq!(get("Type").as_deref(), Some("notify"));
    let pre = get("ExecStartPre").expect("ExecStartPre");
    let checked = as_the_unit(&ns, &settings, &pre).output().unwrap();
    assert!(checked.status.success(), "ExecStartPre: {}", describe(&checked));
    assert!(String::from_utf8_lossy(&checked.stdout).ends_with("config OK\n"), "{}", describe(&checked));

    let exec_start = get("ExecStart").expect("ExecStart");
    assert!(exec_start.starts_with("/usr/bin/tlsgate ") && exec_start.contains(CONFIG), "{exec_start}");
    let mut service = Tlsgate::start_command(as_the_unit(&ns, &settings, &exec_start));
    service.listening(Some(&listener.display_name()));
    service.proc.wait_logged(&["privileges dropped", "capabilities=none"], Duration::from_secs(30));
    let pid = service.proc.pid();
    assert_eq!(status_field(pid, "Uid"), format!("{uid}\t{uid}\t{uid}\t{uid}"));
    assert_eq!(status_field(pid, "CapEff"), "0000000000000000");
    assert_eq!(status_field(pid, "CapAmb"), "0000000000000000");

    let curl = |args: &[&str]| ns.run("curl", &[&["-sS", "--max-time", "10"], args].concat());
    let https = || {
        curl(&[
            "--cacert",
            "/etc/tlsgate/tlsgate.pem",
            "--resolve",
            &format!("localhost:{port}:127.0.0.1"),
            &format!("https://localhost:{port}/"),
        ])
    };
    let out = https();
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from behind the package\n");
    let health = curl(&[&format!("http://{admin}/healthz")]);
    assert!(health.status.success(), "{}", describe(&health));

    // ExecReload's signal: the files are readable by the unit's user, so the reload applies.
    assert!(Command::new("kill").args(["-HUP", &pid.to_string()]).status().unwrap().success());
    service.proc.wait_logged(&["reloaded", "section=terminate"], Duration::from_secs(30));
    let out = https();
    assert!(out.status.success(), "after the reload: {}", describe(&out));

    assert!(Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap().success());
    let stopped = service.proc.wait_exit(Duration::from_secs(45)).expect("stops on SIGTERM");
    assert!(stopped.success(), "{stopped:?}");
    drop(backend_proc);

    // Purged: nothing of it left but the user.
    must("dpkg", &["--purge", "tlsgate"]);
    assert!(!run("dpkg", &["-s", "tlsgate"]).status.success(), "still known to dpkg");
    let wants = "/etc/systemd/system/multi-user.target.wants/tlsgate.service";
    for gone in ["/usr/bin/tlsgate", UNIT, "/etc/tlsgate", "/usr/share/doc/tlsgate", wants] {
        assert!(!Path::new(gone).exists(), "{gone} left after purge");
    }
}

/// docs/operations.md shows the unit's essentials: each of those lines is in the unit as shipped.
#[test]
fn documented_unit_lines_are_the_units() {
    let repo = tlsgate_testkit::docs::repo_root();
    let doc = std::fs::read_to_string(repo.join("docs/operations.md")).unwrap();
    let unit = std::fs::read_to_string(repo.join("packaging/systemd/tlsgate.service")).unwrap();
    let start = doc.find("```ini\n").expect("the unit excerpt") + "```ini\n".len();
    let excerpt = &doc[start..start + doc[start..].find("```").unwrap()];
    let lines: Vec<&str> = unit.lines().collect();
    for line in excerpt.lines() {
        assert!(lines.contains(&line), "docs/operations.md shows {line:?}, the unit does not have it");
    }
}
