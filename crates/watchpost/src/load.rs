//! Loading a configuration for a command: every diagnostic (errors and warnings) printed
//! to stderr as `file:line:column`. A leaf module: the commands (`cli.rs`) and the Windows
//! service's process (`service.rs`) both load through it.

use std::path::Path;

use watchpost_config::{Config, ConfigSource, Loaded, Purpose};

/// Loads and validates a configuration, printing every diagnostic to stderr.
/// `None` when there were errors.
pub fn load(
    path: Option<&Path>,
    purpose: Purpose,
) -> anyhow::Result<Option<(Config, watchpost_filters::Chain)>> {
    Ok(load_checked(path, purpose).map(|l| (l.config, l.chain)))
}

/// [`load`], keeping everything the daemon needs.
pub fn load_checked(path: Option<&Path>, purpose: Purpose) -> Option<Loaded> {
    match watchpost_config::load(&ConfigSource::from_arg(path), purpose) {
        Ok(loaded) => {
            eprint!("{}", loaded.rendered());
            Some(loaded)
        }
        Err(rejected) => {
            eprint!("{}", rejected.rendered());
            None
        }
    }
}
