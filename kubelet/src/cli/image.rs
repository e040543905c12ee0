//! `nodelet image pull|ls|rm|inspect|prune`: the node's image store by hand, with output in
//! the style of `crictl images`.

use std::collections::HashMap;
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;

use anyhow::Context;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use nodelet_runtime::image::{Image, ImageStore, PullProgress, Reference, DEFAULT_REGISTRY_CONFIG_DIR};

#[derive(clap::Args, Debug)]
pub struct ImageArgs {
    /// The agent's state directory; the image store is <root-dir>/images.
    #[arg(long, default_value = "/var/lib/nodelet", global = true)]
    root_dir: PathBuf,
    /// Registry hosts as containerd's config_path: <dir>/<host>/hosts.toml (mirrors, plain
    /// HTTP, CA certificates, skip_verify) or Docker's ca.crt/client.cert files.
    #[arg(long, default_value = DEFAULT_REGISTRY_CONFIG_DIR, global = true)]
    registry_config_dir: PathBuf,
    #[command(subcommand)]
    command: ImageCommand,
}

#[derive(clap::Subcommand, Debug)]
enum ImageCommand {
    /// Pull an image (progress per layer on stderr), then print its digest.
    Pull {
        /// e.g. busybox, 127.0.0.1:5000/web:1, name@sha256:...
        reference: String,
        /// A Docker config.json whose `auths` hold the registry's credentials.
        #[arg(long)]
        docker_config: Option<PathBuf>,
    },
    /// List images: IMAGE, TAG, IMAGE ID, SIZE.
    #[command(alias = "list")]
    Ls,
    /// Print an image's reference, digests, config and size as JSON.
    Inspect { reference: String },
    /// Remove images (by reference, digest or image ID) and the content no other image uses.
    #[command(alias = "rmi")]
    Rm {
        #[arg(required = true)]
        references: Vec<String>,
    },
    /// Remove every image none of whose layers a mounted container rootfs uses.
    Prune,
}

pub fn run(args: ImageArgs) -> anyhow::Result<ExitCode> {
    let root = args.root_dir.join("images");
    let open = || ImageStore::open(&root).with_context(|| format!("opening the image store {}", root.display()));
    match args.command {
        ImageCommand::Pull { reference, docker_config } => {
            let mut store = open()?.with_registry_hosts_dir(&args.registry_config_dir);
            if let Some(path) = docker_config {
                store = store.with_docker_config(&path)?;
            }
            pull(&store, &reference)
        }
        ImageCommand::Ls => {
            print!("{}", table(&open()?.list()?));
            Ok(ExitCode::SUCCESS)
        }
        ImageCommand::Inspect { reference } => {
            let image =
                open()?.get(&reference)?.with_context(|| format!("image {reference} is not in {}", root.display()))?;
            println!("{}", serde_json::to_string_pretty(&inspect_json(&image))?);
            Ok(ExitCode::SUCCESS)
        }
        ImageCommand::Rm { references } => remove(&open()?, &references),
        ImageCommand::Prune => {
            let removed = open()?.prune()?;
            for reference in &removed.images {
                println!("Deleted: {reference}");
            }
            println!("Total reclaimed space: {}", human_size(removed.collected.bytes));
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn pull(store: &ImageStore, reference: &str) -> anyhow::Result<ExitCode> {
    let runtime = super::tokio_runtime()?;
    let progress = Progress::new(std::io::stderr().is_terminal());
    let image = runtime.block_on(store.pull(reference, &progress)).with_context(|| format!("pulling {reference}"))?;
    progress.finish();
    println!("{}", image.digest);
    Ok(ExitCode::SUCCESS)
}

/// Like `crictl rmi`: every argument is tried; exit 1 when any is unknown.
fn remove(store: &ImageStore, references: &[String]) -> anyhow::Result<ExitCode> {
    let mut status = ExitCode::SUCCESS;
    for reference in references {
        let removed = store.remove(reference).with_context(|| format!("removing {reference}"))?;
        if removed.images.is_empty() {
            eprintln!("no such image: {reference}");
            status = ExitCode::FAILURE;
        }
        for image in removed.images {
            println!("Deleted: {image}");
        }
    }
    Ok(status)
}

fn inspect_json(image: &Image) -> serde_json::Value {
    serde_json::json!({
        "reference": image.reference,
        "digest": image.digest,
        "repoDigest": image.repo_digest,
        "id": image.id,
        "size": image.size,
        "config": image.config,
    })
}

/// `crictl images` columns; the IMAGE ID is the config digest's first 12 hex digits.
fn table(images: &[Image]) -> String {
    let rows: Vec<[String; 4]> = images
        .iter()
        .map(|image| {
            let (name, tag) = match Reference::parse(&image.reference) {
                Ok(parsed) => (parsed.name(), parsed.tag.unwrap_or_else(|| "<none>".to_string())),
                Err(_) => (image.reference.clone(), "<none>".to_string()),
            };
            let id = image.id.strip_prefix("sha256:").unwrap_or(&image.id).chars().take(12).collect();
            [name, tag, id, human_size(image.size)]
        })
        .collect();
    let header = ["IMAGE", "TAG", "IMAGE ID", "SIZE"].map(String::from);
    let widths: Vec<usize> =
        (0..4).map(|column| rows.iter().chain([&header]).map(|row| row[column].len()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in [&header].into_iter().chain(rows.iter()) {
        let line: Vec<String> = row.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        out.push_str(line.join("   ").trim_end());
        out.push('\n');
    }
    out
}

/// Decimal units with about 4 significant digits, as crictl (Docker's units.HumanSize).
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    let text = format!("{value:.4}");
    let digits = text.split('.').next().map_or(0, str::len);
    let shown = format!("{value:.prec$}", prec = 4usize.saturating_sub(digits));
    let shown = if shown.contains('.') { shown.trim_end_matches('0').trim_end_matches('.').to_string() } else { shown };
    format!("{shown}{}", UNITS[unit])
}

/// Per-layer progress: bars on a terminal, otherwise a line when a layer starts and ends.
struct Progress {
    bars: Option<MultiProgress>,
    layers: Mutex<HashMap<String, LayerState>>,
}

struct LayerState {
    bar: Option<ProgressBar>,
    done: bool,
}

impl Progress {
    fn new(terminal: bool) -> Progress {
        Progress { bars: terminal.then(MultiProgress::new), layers: Mutex::new(HashMap::new()) }
    }

    fn finish(&self) {
        if let Some(bars) = &self.bars {
            let _ = bars.clear();
        }
    }
}

fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    hex.get(..12).unwrap_or(hex)
}

impl PullProgress for Progress {
    fn layer(&self, digest: &str, downloaded: u64, total: u64) {
        let mut layers = self.layers.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let state = layers.entry(digest.to_string()).or_insert_with(|| {
            let bar = self.bars.as_ref().map(|bars| {
                let bar = bars.add(ProgressBar::new(total));
                let style = ProgressStyle::with_template("{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> ");
                bar.set_style(style);
                bar.set_prefix(short(digest).to_string());
                bar
            });
            if bar.is_none() {
                if downloaded >= total {
                    eprintln!("{}: already present ({})", short(digest), human_size(total));
                } else {
                    eprintln!("{}: downloading {}", short(digest), human_size(total));
                }
            }
            LayerState { bar, done: downloaded >= total }
        });
        match &state.bar {
            Some(bar) => {
                bar.set_position(downloaded);
                if downloaded >= total {
                    bar.finish();
                }
            }
            None if !state.done && downloaded >= total => {
                eprintln!("{}: done", short(digest));
                state.done = true;
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_like_crictl() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1_000), "1kB");
        assert_eq!(human_size(1_234_567), "1.235MB");
        assert_eq!(human_size(45_600_000), "45.6MB");
        assert_eq!(human_size(123_456_789_000), "123.5GB");
    }
}
