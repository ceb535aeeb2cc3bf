//! `tlsgate demo`: the command the README gives a newcomer. The curl command it prints must work
//! exactly as printed, and Ctrl-C must stop it and remove its throwaway keys.

use std::process::Command;
use std::time::Duration;

use tlsgate_testkit::clients::describe;
use tlsgate_testkit::process::Tlsgate;

const BIN: &str = env!("CARGO_BIN_EXE_tlsgate");

#[test]
fn demo_prints_a_curl_command_that_works_and_stops_on_ctrl_c() {
    let mut demo = Tlsgate::start(BIN, &["demo", "--listen", "127.0.0.1:0"]);
    let line = demo.proc.wait_for(&["curl --cacert"], Duration::from_secs(30));
    demo.proc.wait_logged(&["listening", "listener=demo"], Duration::from_secs(30));
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words[0], "curl");
    let ca = words[2].to_string();
    let out = Command::new(words[0]).args(&words[1..]).output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from tlsgate demo backend\n");
    assert!(std::path::Path::new(&ca).exists());

    let kill = Command::new("kill").args(["-INT", &demo.proc.pid().to_string()]).status().unwrap();
    assert!(kill.success());
    let status = demo.proc.wait_exit(Duration::from_secs(10)).expect("demo exits on SIGINT");
    assert!(status.success(), "{status:?}\n{}", demo.proc.log_text());
    assert!(!std::path::Path::new(&ca).exists(), "throwaway CA left behind at {ca}");
}
