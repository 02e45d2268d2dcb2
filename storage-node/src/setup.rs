//! `storage-node setup`: a node directory with an identity and a documented config.

use std::ops::ControlFlow;
use std::path::Path;

use shoal_proto::Identity;
use shoal_proto::identity::Progress;

use crate::config::{Config, NodeDir};
use crate::error::ConfigError;

/// Refuses to set up over an existing node directory unless `force`.
pub fn check_can_setup(dir: &Path, force: bool) -> Result<(), ConfigError> {
    let d = NodeDir(dir.to_owned());
    if !force && (d.config().exists() || d.identity().exists()) {
        return Err(ConfigError::AlreadySetUp {
            dir: dir.to_owned(),
        });
    }
    Ok(())
}

/// Creates `dir` with a fresh identity of `config.difficulty` bits and `config.toml`.
/// Refuses an existing setup unless `force`, which also deletes the stored pieces (they
/// belong to the old identity and could never be served again).
pub fn setup(
    dir: &Path,
    config: &Config,
    force: bool,
    threads: usize,
    progress: impl FnMut(&Progress) -> ControlFlow<()>,
) -> Result<Identity, ConfigError> {
    check_can_setup(dir, force)?;
    let d = NodeDir(dir.to_owned());
    std::fs::create_dir_all(dir).map_err(|source| ConfigError::Write {
        path: dir.to_owned(),
        source,
    })?;
    let identity = Identity::generate_with(config.difficulty, threads, progress)?;
    if force {
        let storage = d.storage();
        match std::fs::remove_dir_all(&storage) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(ConfigError::Write {
                    path: storage,
                    source,
                });
            }
        }
    }
    identity.save(&d.identity(), force)?;
    let path = d.config();
    let tmp = dir.join(".config.toml.tmp");
    let write = std::fs::write(&tmp, config.to_documented_toml())
        .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|()| std::fs::rename(&tmp, &path));
    write.map_err(|source| ConfigError::Write { path, source })?;
    Ok(identity)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Overrides, load};
    use crate::size::ByteSize;

    #[test]
    fn setup_refuses_to_redo_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            allocate: ByteSize(1 << 30),
            difficulty: 2,
            ..Config::default()
        };
        let go = |_: &Progress| ControlFlow::Continue(());
        let first = setup(dir.path(), &config, false, 1, go).unwrap();
        assert!(first.node_id().difficulty() >= 2);
        assert!(matches!(
            setup(dir.path(), &config, false, 1, go),
            Err(ConfigError::AlreadySetUp { .. })
        ));
        let loaded = load(dir.path(), Overrides::default(), Overrides::default()).unwrap();
        assert_eq!(loaded, config);
        std::fs::create_dir_all(dir.path().join("storage/pieces")).unwrap();
        let second = setup(dir.path(), &config, true, 1, go).unwrap();
        assert_ne!(first.node_id(), second.node_id());
        assert!(!dir.path().join("storage").exists());
        let on_disk = Identity::load(&dir.path().join("identity.key")).unwrap();
        assert_eq!(on_disk.node_id(), second.node_id());
    }
}
