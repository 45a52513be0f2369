//! `rbee-demo-worker`: the demo worker as a program of its own (see the library's docs).

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let own = std::env::current_exe().expect("own executable");
    let code =
        rbee_demo_worker::run(rbee_demo_worker::Args::parse(), &[own.into_os_string()]).await;
    std::process::exit(code);
}
