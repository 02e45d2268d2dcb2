//! `storage-node setup`: a node directory with an identity and a documented config.

use std::ops::ControlFlow;
use std::path::Path;

use shoal_proto::Identity;
use shoal_proto::identity::Progress;

use crate::config::{Config, NodeDir};
use crate::error::ConfigError;

/// Refuses to set up over an existing node directory unless `force`.
pub fn check_can_setup(dir: &Path, force: bool) -> Result<(), ConfigError> {
    check_can_setup_at(dir, &NodeDir(dir.to_owned()).identity(), force)
}

/// [`check_can_setup`] for an identity kept at `identity` instead of `DIR/identity.key`
/// (a separate volume, a secrets mount).
pub fn check_can_setup_at(dir: &Path, identity: &Path, force: bool) -> Result<(), ConfigError> {
    let d = NodeDir(dir.to_owned());
    if !force && (d.config().exists() || identity.exists()) {
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
    let identity = NodeDir(dir.to_owned()).identity();
    setup_at(dir, &identity, config, force, threads, progress)
}

/// [`setup`] with the identity written to `identity_path` instead of `DIR/identity.key`.
pub fn setup_at(
    dir: &Path,
    identity_path: &Path,
    config: &Config,
    force: bool,
    threads: usize,
    progress: impl FnMut(&Progress) -> ControlFlow<()>,
) -> Result<Identity, ConfigError> {
    check_can_setup_at(dir, identity_path, force)?;
    let d = NodeDir(dir.to_owned());
    let key_dir = identity_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(dir);
    for path in [dir, key_dir] {
        shoal_proto::private::create_dir(path).map_err(|source| ConfigError::Write {
            path: path.to_owned(),
            source,
        })?;
    }
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
    identity.save(identity_path, force)?;
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

    #[test]
    fn identity_can_live_outside_the_node_directory() {
        let data = tempfile::tempdir().unwrap();
        let keys = tempfile::tempdir().unwrap();
        let node_dir = data.path().join("node");
        let key = keys.path().join("sub/identity.key");
        let config = Config {
            allocate: ByteSize(1 << 20),
            difficulty: 1,
            ..Config::default()
        };
        let go = |_: &Progress| ControlFlow::Continue(());
        let made = setup_at(&node_dir, &key, &config, false, 1, go).unwrap();
        assert_eq!(Identity::load(&key).unwrap().node_id(), made.node_id());
        assert!(!node_dir.join("identity.key").exists());
        assert!(node_dir.join("config.toml").exists());
        // The key alone (e.g. a restored backup into a fresh data volume) blocks a setup
        // that would replace it.
        std::fs::remove_file(node_dir.join("config.toml")).unwrap();
        assert!(matches!(
            setup_at(&node_dir, &key, &config, false, 1, go),
            Err(ConfigError::AlreadySetUp { .. })
        ));
        assert_eq!(Identity::load(&key).unwrap().node_id(), made.node_id());
    }
}
