//! The `tlsgate` binary: one subcommand per mode, all sharing one config format.

mod allocator;
mod cli;
mod cmd;
mod examples;
mod failure;
mod limits;
mod logging;
mod memory;
mod notify;
mod privileges;

use clap::Parser;

// mimalloc instead of glibc's malloc: a handshake allocates and frees a few hundred small
// objects (rustls messages, boxed states, tokio tasks). Measured with callgrind, 2.3 % fewer
// instructions per full handshake and 2.7 % per resumed one; 1000 idle connections take 5.3 KiB
// each instead of 5.9 (bench/run.sh's idle phase, same process). aws-lc still uses glibc's.
// With a heap of its own for inline parked flows (allocator.rs).
#[global_allocator]
static GLOBAL: allocator::Allocator = allocator::Allocator;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    memory::no_transparent_huge_pages();
    let runtime = match cli.workers {
        // One thread: the current-thread scheduler, no work-stealing between idle workers.
        Some(1) => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        Some(n) => {
            tokio::runtime::Builder::new_multi_thread().worker_threads(usize::from(n)).enable_all().build()
        }
        None => tokio::runtime::Builder::new_multi_thread().enable_all().build(),
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tlsgate: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cmd::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(failure) => {
            failure.report();
            std::process::ExitCode::FAILURE
        }
    }
}
