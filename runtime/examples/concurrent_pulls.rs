//! Benchmark helper for scripts/bench-images.sh (not a test): opens one image store and runs
//! COUNT concurrent pulls of the same reference through it, as COUNT pods of one uncached
//! image started together would, then prints each pull's time. The script counts the blob
//! downloads in the registry's access log.
//!
//!   cargo run --release -p nodelet-runtime --example concurrent_pulls -- STORE_DIR REFERENCE [COUNT]

use std::time::Instant;

use nodelet_runtime::image::{ImageStore, NoProgress};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 || args.len() > 4 {
        eprintln!("usage: concurrent_pulls STORE_DIR REFERENCE [COUNT]");
        std::process::exit(2);
    }
    let (root, reference) = (&args[1], &args[2]);
    let count: usize = args.get(3).map(|c| c.parse()).transpose()?.unwrap_or(20);
    let store = ImageStore::open(root)?;

    let start = Instant::now();
    let pulls = (0..count).map(|_| {
        let store = &store;
        async move {
            let t0 = Instant::now();
            let result = store.pull(reference, &NoProgress).await;
            (result, t0.elapsed())
        }
    });
    let results = futures::future::join_all(pulls).await;
    let total = start.elapsed();

    let mut failed = 0;
    for (i, (result, took)) in results.iter().enumerate() {
        match result {
            Ok(image) => println!("pull {i:2}: {:8.1} ms  {}", took.as_secs_f64() * 1e3, image.digest),
            Err(e) => {
                failed += 1;
                println!("pull {i:2}: {:8.1} ms  FAILED: {e}", took.as_secs_f64() * 1e3);
            }
        }
    }
    println!("{count} concurrent pulls in one store: {:.1} ms wall, {failed} failed", total.as_secs_f64() * 1e3);
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}
