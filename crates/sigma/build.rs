//! `WATCHPOST_SIGMA_BUILD`: a digest of what decides how rules compile, so that the
//! compiled-rule cache (`src/load.rs`) is never used by another build: this crate's
//! sources and manifest, the event crate's sources (field names, number parsing) when
//! built in the workspace, and the workspace's `Cargo.lock` (the versions of the YAML,
//! JSON and regex parsers).

use std::hash::Hasher;
use std::path::{Path, PathBuf};

fn files(p: &Path, out: &mut Vec<PathBuf>) {
    if p.is_dir() {
        if let Ok(rd) = std::fs::read_dir(p) {
            for e in rd.flatten() {
                files(&e.path(), out);
            }
        }
    } else if p.is_file() {
        out.push(p.to_path_buf());
    }
}

fn main() {
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let inputs = [
        dir.join("src"),
        dir.join("Cargo.toml"),
        dir.join("../event/src"),
        dir.join("../../Cargo.lock"),
    ];
    let mut all = Vec::new();
    for p in &inputs {
        if p.exists() {
            println!("cargo:rerun-if-changed={}", p.display());
            files(p, &mut all);
        }
    }
    all.sort();
    // SipHash with fixed keys: the same inputs give the same digest.
    let mut h = std::hash::DefaultHasher::new();
    for f in &all {
        let rel = f.strip_prefix(&dir).unwrap_or(f);
        h.write(rel.to_string_lossy().as_bytes());
        h.write_u8(0);
        h.write(&std::fs::read(f).unwrap_or_default());
        h.write_u8(0);
    }
    h.write(
        std::env::var("CARGO_PKG_VERSION")
            .unwrap_or_default()
            .as_bytes(),
    );
    println!("cargo:rustc-env=WATCHPOST_SIGMA_BUILD={:016x}", h.finish());
}
