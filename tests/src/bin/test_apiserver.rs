//! `nodelet-test-apiserver --dir DIR [--listen 127.0.0.1:6443] [--node-kubeconfig NAME]...`:
//! runs the test Kubernetes API server, writes DIR/admin.kubeconfig (and
//! DIR/node-<NAME>.kubeconfig per --node-kubeconfig), prints the URL, stops on SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use nodelet_tests::apiserver::{Options, TestApiServer};
use tokio::signal::unix::{signal, SignalKind};

#[derive(Parser, Debug)]
#[command(name = "nodelet-test-apiserver", about = "A Kubernetes API server for tests")]
struct Args {
    /// Directory for the CA and kubeconfigs.
    #[arg(long)]
    dir: PathBuf,
    /// Loopback address to listen on (port 0 picks one).
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Write DIR/node-NAME.kubeconfig for this node (repeatable).
    #[arg(long = "node-kubeconfig", value_name = "NAME")]
    node_kubeconfigs: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let options = Options { listen: args.listen, ..Options::default() };
    let server = TestApiServer::start_with(&args.dir, options).await?;
    for node in &args.node_kubeconfigs {
        let path = server.node_kubeconfig(node)?;
        eprintln!("wrote {}", path.display());
    }
    eprintln!("wrote {}", server.admin_kubeconfig().display());
    println!("{}", server.url);
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    server.shutdown().await;
    Ok(())
}
