#![forbid(unsafe_code)]

use clap::Parser;

/// Namespace offloading for multi-cluster Kubernetes (Liqo's offloading.liqo.io API).
#[derive(Parser)]
#[command(version, about)]
struct Cli {}

fn main() {
    let Cli {} = Cli::parse();
    namespace_offloading::tls::install_crypto_provider();
}
