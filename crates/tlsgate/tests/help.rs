//! Every subcommand's `--help` teaches: it ends with "Examples:", keeps the global flags under
//! their own heading, and its example commands are real. Each example must appear in README.md
//! as written (so the two stay in sync), and the real binary must accept it: pasted into `sh`
//! with `tlsgate` on PATH, in an empty directory, an example that names files gets past argument
//! parsing (clap's usage errors exit with 2) and stops at the first missing file with a config
//! error; one that names no file would start serving, so it is run with `--help` appended, which
//! still parses (and rejects) every flag and value before it.

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_tlsgate");
const SUBCOMMANDS: [&[&str]; 16] = [
    &["terminate"],
    &["originate"],
    &["tunnel"],
    &["tunnel", "gate"],
    &["tunnel", "portal"],
    &["connect"],
    &["connect", "gate"],
    &["connect", "portal"],
    &["inline"],
    &["inline", "run"],
    &["inline", "simulate"],
    &["demo"],
    &["backend"],
    &["run"],
    &["check"],
    &["keyd"],
];

fn help(path: &[&str]) -> String {
    let out = Command::new(BIN).args(path).arg("--help").output().unwrap();
    assert!(out.status.success(), "{path:?} --help: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// The example commands after "Examples:", continuation lines joined as a shell would read them.
fn examples(help: &str) -> Vec<String> {
    let section = help.split("\nExamples:\n").nth(1).expect("an Examples: section");
    let mut commands = Vec::new();
    let mut current: Option<String> = None;
    for line in section.lines() {
        let line = line.trim();
        match current.as_mut() {
            Some(command) => command.push_str(line),
            None if line.starts_with("tlsgate ") => current = Some(line.to_string()),
            None => continue,
        }
        let command = current.as_mut().unwrap();
        match command.strip_suffix('\\') {
            Some(rest) => *command = rest.to_string(),
            None => commands.push(current.take().unwrap()),
        }
    }
    commands
}

/// Whitespace collapsed, continuations removed: the command as one line of words.
fn one_line(text: &str) -> String {
    text.replace("\\\n", " ").split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Runs `command` through `sh` in `dir`, with this build's tlsgate first on PATH.
fn shell(dir: &Path, command: &str) -> Output {
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    Command::new("sh").arg("-c").arg(command).current_dir(dir).env("PATH", path).output().unwrap()
}

#[test]
fn every_subcommand_help_ends_with_examples_and_shows_global_options_apart() {
    for path in SUBCOMMANDS {
        let text = help(path);
        let (mode, global) = text
            .split_once("\nGlobal options:\n")
            .unwrap_or_else(|| panic!("{path:?}: no Global options heading:\n{text}"));
        let global = global.split("\nExamples:\n").next().unwrap();
        for flag in ["--log-level", "--log-format", "--workers", "--user", "--group"] {
            assert!(global.contains(flag), "{path:?}: {flag} not under Global options:\n{text}");
            assert!(!mode.contains(flag), "{path:?}: {flag} among the mode's own options:\n{text}");
        }
        assert!(!examples(&text).is_empty(), "{path:?}: no example command:\n{text}");
    }
    let inline = help(&["inline"]);
    assert!(inline.contains("between two interfaces (run)"), "{inline}");
}

#[test]
fn every_example_is_in_the_readme_and_accepted_by_the_binary() {
    let readme = std::fs::read_to_string(tlsgate_testkit::docs::repo_root().join("README.md")).unwrap();
    let readme = one_line(&readme);
    let empty = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for path in SUBCOMMANDS {
        for example in examples(&help(path)) {
            let example = one_line(&example);
            assert!(readme.contains(&example), "{path:?}: not in README.md as written: {example}");
            // The part before a shell comment, which is where `--help` would go.
            let command = example.split(" #").next().unwrap().trim();
            let names_files = [".pem", ".key", ".toml", ".crl"].iter().any(|ext| command.contains(ext));
            if names_files {
                let out = shell(empty.path(), &example);
                let stderr = String::from_utf8_lossy(&out.stderr);
                assert_eq!(out.status.code(), Some(1), "{example}: {stderr}");
                // Parsed and refused on the first thing this machine lacks: a named file, or
                // the user an example runs as.
                let refused = stderr.contains("cannot read") || stderr.contains("no such user");
                assert!(stderr.contains("config error: ") && refused, "{example}: {stderr}");
            } else {
                let out = shell(empty.path(), &format!("{command} --help"));
                assert!(out.status.success(), "{example}: {}", String::from_utf8_lossy(&out.stderr));
            }
            checked += 1;
        }
    }
    // terminate 4, originate 2, tunnel 2, gate 1, portal 1, inline 2, inline run 1, simulate 1,
    // demo 1, backend 1, run 1, check 1, connect 2, connect gate 1, connect portal 1, keyd 2.
    assert_eq!(checked, 24);
}
