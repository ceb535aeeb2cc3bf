//! `tlsgate inline simulate`: the subcommand runs the inline engine's simulator, prints one
//! summary line, and its exit status says whether anything was violated.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_tlsgate");

fn simulate(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN).args(["inline", "simulate"]).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_impaired_run_completes_in_buffered_mode() {
    let args =
        "--flows 20 --seed 7 --loss 0.03 --reorder 0.05 --duplicate 0.01 --bytes 131072 --mode buffered";
    let (ok, line, err) = simulate(&args.split(' ').collect::<Vec<_>>());
    assert!(ok, "{line}{err}");
    assert_eq!(line.lines().count(), 1, "{line}");
    for want in
        ["flows=20 completed=20", "bytes_up=2621440 bytes_down=2621440", "nonce_reuses=0", "violations=0"]
    {
        assert!(line.contains(want), "no {want:?} in {line}");
    }
    assert!(!line.contains("retransmissions=0 "), "impairments caused no retransmission: {line}");
    assert!(line.contains("before_tag_up=0 "), "buffered: nothing before its tag: {line}");
}

#[test]
fn an_impaired_run_completes_in_cut_through_mode() {
    let args =
        "--flows 20 --seed 7 --loss 0.03 --reorder 0.05 --duplicate 0.01 --bytes 131072 --mode cut-through";
    let (ok, line, err) = simulate(&args.split(' ').collect::<Vec<_>>());
    assert!(ok, "{line}{err}");
    assert_eq!(line.lines().count(), 1, "{line}");
    for want in
        ["flows=20 completed=20", "bytes_up=2621440 bytes_down=2621440", "nonce_reuses=0", "violations=0"]
    {
        assert!(line.contains(want), "no {want:?} in {line}");
    }
    // Plaintext really left before its record's tag (buffered mode shows 0).
    assert!(!line.contains("before_tag_up=0 "), "{line}");
}

#[test]
fn bad_arguments_are_refused() {
    let (ok, _, err) = simulate(&["--loss", "1.5"]);
    assert!(!ok && err.contains("--loss must be a probability"), "{err}");
    let (ok, _, err) = simulate(&["--mode", "bufferless"]);
    assert!(!ok && err.contains("invalid value"), "{err}");
}
