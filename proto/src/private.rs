//! Directories and files that hold secrets (an access grant, a node key, the catalog, the
//! pieces): directories are made 0700 and files 0600, whatever the umask, and a secret
//! file that others can read is refused at load with what to run.

use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A secret file that group or others may read or write.
#[derive(Debug, thiserror::Error)]
#[error(
    "{} has mode {mode:o}: others on this machine can read it; run `chmod 600 {}`",
    path.display(),
    path.display()
)]
pub struct Insecure {
    pub path: PathBuf,
    pub mode: u32,
}

/// Makes `dir` and its missing parents; the ones made here get mode 0700 (a directory
/// that already exists keeps its mode: it may be shared on purpose, like `~/.config`).
pub fn create_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Refuses a secret file that group or others may access.
pub fn check_file(path: &Path, meta: &fs::Metadata) -> Result<(), Insecure> {
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Insecure {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirs_made_here_are_private_and_open_files_are_refused() {
        let root = tempfile::tempdir().unwrap();
        // Whatever the umask says.
        let made = root.path().join("a/b");
        create_dir(&made).unwrap();
        for d in [root.path().join("a"), made.clone()] {
            let mode = fs::metadata(&d).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", d.display());
        }
        let f = made.join("secret");
        fs::write(&f, b"x").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
        let err = check_file(&f, &fs::metadata(&f).unwrap()).unwrap_err();
        assert_eq!(err.mode, 0o644);
        assert!(err.to_string().contains("chmod 600"), "{err}");
        fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).unwrap();
        check_file(&f, &fs::metadata(&f).unwrap()).unwrap();
    }
}
