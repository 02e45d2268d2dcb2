//! Generates a node identity with proof of work and shows it: the smallest thing Shoal
//! runs until the storage node and devnet land.
//!
//! `cargo run --release -p shoal-proto --example identity -- [DIFFICULTY] [KEY_FILE]`

use std::ops::ControlFlow;
use std::path::PathBuf;

use shoal_proto::{DEFAULT_DIFFICULTY, Identity};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let difficulty = match args.next() {
        Some(d) => d
            .parse::<u32>()
            .map_err(|_| format!("difficulty must be a whole number, got {d:?}"))?,
        None => DEFAULT_DIFFICULTY,
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    eprintln!(
        "generating an identity with {difficulty} bits of proof of work on {threads} threads"
    );
    let id = Identity::generate_with(difficulty, threads, |p| {
        eprint!(
            "\r  {} keys tried in {:.1}s (expect ~{})",
            p.attempts,
            p.elapsed.as_secs_f64(),
            p.expected
        );
        ControlFlow::Continue(())
    })?;
    eprintln!();
    println!("node id:    {}", id.node_id());
    println!("public key: {}", id.public_key().to_hex());
    println!("difficulty: {} bits", id.difficulty());
    if let Some(path) = args.next().map(PathBuf::from) {
        id.save(&path, false)?;
        let back = Identity::load(&path)?;
        println!(
            "saved to {} (mode 0600), reloads as {}",
            path.display(),
            back.node_id()
        );
    }
    Ok(())
}
