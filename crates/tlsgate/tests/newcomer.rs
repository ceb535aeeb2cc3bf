//! The README's path for someone new to the project, on what is committed: a fresh `git clone`;
//! the command under "## Try it" run as written (the demo starts, the curl command it prints works
//! as printed, Ctrl-C stops it and removes its throwaway keys); the command under "## Run the
//! tests" run as written plus `--no-run`, which must build everything.
//!
//! The clone builds into this workspace's target directory, so the release build is made once
//! and the test binaries the dry run needs are the ones already built.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tlsgate_testkit::demo::run_printed_curl;
use tlsgate_testkit::docs::sh_block_under;
use tlsgate_testkit::process::Proc;

/// The release build of the whole binary, on two busy cores.
const BUILD: Duration = Duration::from_secs(45 * 60);

#[test]
fn a_fresh_clone_runs_the_readme_commands_as_written() {
    let root = workspace_root();
    let tmp = tempfile::tempdir().unwrap();
    let clone = tmp.path().join("tlsgate");
    run(Command::new("git").args(["clone", "--quiet"]).arg(&root).arg(&clone));
    same_times_as(&root, &clone);
    let readme = std::fs::read_to_string(clone.join("README.md")).expect("the clone has a README.md");
    let try_it = one_line(&sh_block_under(&readme, "Try it"));
    let run_tests = one_line(&sh_block_under(&readme, "Run the tests"));
    let target = target_dir_for_clone(&root);

    // "Try it": the demo, its curl command as printed, then Ctrl-C.
    let mut demo = Proc::spawn("readme demo", cargo_shell(&clone, &target, &format!("exec {try_it}")));
    let ca = run_printed_curl(&demo, BUILD);
    demo.interrupt();
    let status = demo.wait_exit(Duration::from_secs(30)).expect("the demo exits on SIGINT");
    assert!(status.success(), "`{try_it}` after SIGINT: {status:?}\n{}", demo.log_text());
    assert!(!ca.exists(), "throwaway CA left behind at {}", ca.display());
    assert!(!ca.parent().unwrap().exists(), "throwaway directory left behind");
    assert!(!demo.log_text().contains("panicked"), "{}", demo.log_text());

    // "Run the tests", as a dry run.
    let dry = format!("{run_tests} --no-run");
    let mut tests = Proc::spawn("readme tests", cargo_shell(&clone, &target, &dry));
    let status =
        tests.wait_exit(BUILD).unwrap_or_else(|| panic!("`{dry}` still running:\n{}", tests.log_text()));
    assert!(status.success(), "`{dry}`: {status:?}\n{}", tests.log_text());
    // Every member: this crate's integration tests and the benchmark's load generator alike.
    for built in ["deps/newcomer-", "deps/tlsgate_loadgen-"] {
        assert!(tests.lines_with(&["Executable", built]).len() == 1, "{built}?\n{}", tests.log_text());
    }
}

/// The README block's one command line; anything more and this test must learn to run it.
fn one_line(block: &str) -> String {
    let lines: Vec<&str> = block.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one command in the README block:\n{block}");
    lines[0].trim().to_string()
}

/// `bash -c TEXT` in the clone, where `cargo` is the cargo running this test and the build goes
/// to `target`. The variables cargo sets for this test binary are left out: a newcomer's shell has
/// none of them.
fn cargo_shell(clone: &Path, target: &Path, text: &str) -> Command {
    let cargo = std::env::var_os("CARGO").map(PathBuf::from).or(option_env!("CARGO").map(PathBuf::from));
    let mut paths: Vec<PathBuf> = cargo.iter().filter_map(|c| c.parent().map(Path::to_path_buf)).collect();
    paths.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()));
    let mut cmd = Command::new("bash");
    cmd.args(["-c", text]).current_dir(clone);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let set_for_tests =
            ["CARGO_PKG_", "CARGO_BIN_EXE_", "CARGO_MANIFEST_", "CARGO_CRATE_", "CARGO_PRIMARY_"];
        if key == "CARGO" || set_for_tests.iter().any(|p| key.starts_with(p)) {
            cmd.env_remove(&*key);
        }
    }
    cmd.env("PATH", std::env::join_paths(paths).unwrap()).env("CARGO_TARGET_DIR", target);
    cmd
}

/// The workspace this test belongs to (cargo runs tests in the package's directory).
fn workspace_root() -> PathBuf {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from).expect("run by cargo");
    manifest.ancestors().nth(2).expect("crates/tlsgate is two levels down").to_path_buf()
}

/// This workspace's target directory (the one holding this test binary, marked by cargo's
/// CACHEDIR.TAG) when the working tree is what was committed, so what the clone builds is what
/// this tree would build. With uncommitted changes, a directory of the clone's own inside it:
/// sharing would let the clone's build of the committed code stand in for the changed code.
fn target_dir_for_clone(root: &Path) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe
        .ancestors()
        .find(|d| d.join("CACHEDIR.TAG").exists())
        .unwrap_or_else(|| panic!("no target directory above {}", exe.display()))
        .to_path_buf();
    // Untracked files are no part of either build of the committed sources.
    let status =
        run(Command::new("git").arg("-C").arg(root).args(["status", "--porcelain", "--untracked-files=no"]));
    if status.trim().is_empty() {
        target
    } else {
        eprintln!("uncommitted changes: the clone builds into its own target/newcomer-clone");
        target.join("newcomer-clone")
    }
}

/// `git clone` stamps every file with the current time, which cargo would take for an edit of
/// every source. Each tracked file takes the time of the same file in this tree instead: with the
/// same content (a clean tree) the clone is then exactly as fresh as this tree's builds.
fn same_times_as(root: &Path, clone: &Path) {
    let files = run(Command::new("git").arg("-C").arg(clone).args(["ls-files", "-z"]));
    for rel in files.split('\0').filter(|f| !f.is_empty()) {
        let (here, there) = (root.join(rel), clone.join(rel));
        let is_file = |p: &Path| std::fs::symlink_metadata(p).map(|m| m.is_file()).unwrap_or(false);
        if !is_file(&here) || !is_file(&there) {
            continue;
        }
        let modified = std::fs::metadata(&here).and_then(|m| m.modified()).unwrap();
        let file = std::fs::File::options().write(true).open(&there).unwrap();
        file.set_modified(modified).unwrap_or_else(|e| panic!("{}: {e}", there.display()));
    }
}

/// Runs a short helper command to completion; its stdout.
fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", tlsgate_testkit::clients::describe(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}
