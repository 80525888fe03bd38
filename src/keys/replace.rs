//! Reading and replacing the keys file for the `keys` commands, so that a running server
//! never sees half a file and an edit never loosens who may change it.
//!
//! SECURITY:
//! - A file or folder other users could have written is refused, not edited: a
//!   world-writable keys file (anyone could have added a key), a world-writable folder
//!   (anyone could swap the file), a symbolic link (the edit would land where the link
//!   points, perhaps outside the folder the sandbox reads), anything but a regular file.
//! - The new text goes to a temporary file in the same folder (created exclusively, never
//!   following a link), gets the old file's mode and owner, is synced, then renamed over
//!   the old one and the folder synced: the server reads either the old file or the new,
//!   whole. The temporary's name (`.NAME.*.tmp`) is one the sandbox's keys-folder check
//!   already counts as the server's own.
//! - Two commands at once cannot lose an edit: each holds an exclusive lock on the file
//!   it read until its rename, and re-opens when the file was replaced meanwhile.

use super::MAX_KEYS_FILE_BYTES;
use crate::sandbox::reread::folder_of;
use std::fs::{File, Metadata, OpenOptions, Permissions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// How often a file replaced under us is re-opened before giving up. Each re-open means
/// another edit landed, so this bounds the wait behind that many concurrent commands.
const MAX_REOPENS: usize = 100;
/// Mode of a keys file `keys add` creates: the owner only (the operator widens it to the
/// service user's group, as the README says).
const NEW_FILE_MODE: u32 = 0o600;

/// The keys file, read and locked for one edit.
pub struct Editing {
    path: PathBuf,
    /// The open, locked file; None when there was no file (`keys add` creates it).
    file: Option<(File, Metadata)>,
    text: String,
}

impl Editing {
    /// Check, open, lock and read `path`; a missing file reads as empty when
    /// `create` is set.
    pub fn open(path: &Path, create: bool) -> Result<Editing, String> {
        check_folder(path)?;
        for _ in 0..MAX_REOPENS {
            let meta = match std::fs::symlink_metadata(path) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                    return Ok(Editing {
                        path: path.to_path_buf(),
                        file: None,
                        text: String::new(),
                    })
                }
                Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
            };
            check_file(path, &meta)?;
            let mut file = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(path)
                .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
            file.lock()
                .map_err(|e| format!("cannot lock {}: {e}", path.display()))?;
            // The file may have been replaced between the check and the lock (another
            // `keys` command renamed its edit over it): then read the new one.
            let now = std::fs::symlink_metadata(path).ok();
            let held = file.metadata().map_err(|e| e.to_string())?;
            if now.is_none_or(|n| (n.dev(), n.ino()) != (held.dev(), held.ino())) {
                continue;
            }
            check_file(path, &held)?;
            if held.len() > MAX_KEYS_FILE_BYTES {
                return Err(format!(
                    "{} is larger than {MAX_KEYS_FILE_BYTES} bytes",
                    path.display()
                ));
            }
            let mut text = String::new();
            file.read_to_string(&mut text)
                .map_err(|e| format!("cannot read {} as UTF-8: {e}", path.display()))?;
            return Ok(Editing {
                path: path.to_path_buf(),
                file: Some((file, held)),
                text,
            });
        }
        Err(format!(
            "{} kept changing while it was being opened; try again",
            path.display()
        ))
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// True when the file did not exist (and `replace` will create it).
    pub fn is_new(&self) -> bool {
        self.file.is_none()
    }

    /// Replace the file with `text` atomically (module header); the lock is held until
    /// the new file is in place.
    pub fn replace(self, text: &str) -> Result<(), String> {
        let dir = folder_of(&self.path);
        let name = self
            .path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| format!("{} has no file name", self.path.display()))?;
        let suffix = crate::keys::generate_secret()?;
        let temp = dir.join(format!(".{name}.{}.tmp", suffix.get(..12).unwrap_or("x")));
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            let _ = std::fs::remove_file(&temp);
            format!("{what} {}: {e}", temp.display())
        };
        let mode = self
            .file
            .as_ref()
            .map_or(NEW_FILE_MODE, |(_, m)| m.mode() & 0o7777);
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(NEW_FILE_MODE)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&temp)
            .map_err(|e| format!("cannot create {}: {e}", temp.display()))?;
        if let Some((_, old)) = &self.file {
            let mine = out.metadata().map_err(|e| fail("cannot stat", &e))?;
            if (mine.uid(), mine.gid()) != (old.uid(), old.gid()) {
                // SECURITY: the server's user reads the file through its group; a new
                // file with another owner could lock it out, so fail instead.
                std::os::unix::fs::fchown(&out, Some(old.uid()), Some(old.gid())).map_err(
                    |e| {
                        fail(
                            &format!(
                                "cannot give the new file the old owner {}:{} (run as root or as that owner)",
                                old.uid(),
                                old.gid()
                            ),
                            &e,
                        )
                    },
                )?;
            }
        }
        out.set_permissions(Permissions::from_mode(mode))
            .map_err(|e| fail("cannot set the mode of", &e))?;
        out.write_all(text.as_bytes())
            .and_then(|()| out.sync_all())
            .map_err(|e| fail("cannot write", &e))?;
        drop(out);
        if self.file.is_some() {
            std::fs::rename(&temp, &self.path).map_err(|e| fail("cannot rename", &e))?;
        } else {
            // A new file: a hard link fails if someone created the file meanwhile, where
            // a rename would silently replace theirs.
            std::fs::hard_link(&temp, &self.path)
                .map_err(|e| fail(&format!("cannot create {} from", self.path.display()), &e))?;
            let _ = std::fs::remove_file(&temp);
        }
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| format!("cannot sync the folder {}: {e}", dir.display()))?;
        Ok(())
    }
}

fn check_folder(path: &Path) -> Result<(), String> {
    let dir = folder_of(path);
    let meta = std::fs::metadata(&dir)
        .map_err(|e| format!("cannot read the folder {}: {e}", dir.display()))?;
    if meta.mode() & 0o002 != 0 {
        return Err(format!(
            "the keys file's folder {} is world-writable: any user could replace the keys file. \
             Keep it in a folder only its owner can write (e.g. /etc/llama-gguf-inference, 0755 root)",
            dir.display()
        ));
    }
    Ok(())
}

fn check_file(path: &Path, meta: &Metadata) -> Result<(), String> {
    let shown = path.display();
    if meta.file_type().is_symlink() {
        return Err(format!(
            "{shown} is a symbolic link; edit the file it points to (a Kubernetes Secret: update the Secret)"
        ));
    }
    if !meta.is_file() {
        return Err(format!("{shown} is not a regular file"));
    }
    if meta.mode() & 0o002 != 0 {
        return Err(format!(
            "{shown} is world-writable: any user could have added a key. Check every line, \
             then `chmod o-w` it and run this again"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn replace_keeps_mode_and_leaves_no_temporary() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("keys");
        std::fs::write(&p, "old\n").unwrap();
        std::fs::set_permissions(&p, Permissions::from_mode(0o640)).unwrap();
        let before = std::fs::metadata(&p).unwrap().ino();
        let e = Editing::open(&p, false).unwrap();
        assert_eq!(e.text(), "old\n");
        assert!(!e.is_new());
        e.replace("new\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "new\n");
        let after = std::fs::metadata(&p).unwrap();
        assert_eq!(after.mode() & 0o777, 0o640);
        assert_ne!(after.ino(), before, "replaced by rename, not rewritten");
        let names: Vec<_> = std::fs::read_dir(d.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn a_missing_file_is_created_owner_only_when_asked() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("keys");
        assert!(Editing::open(&p, false).is_err());
        let e = Editing::open(&p, true).unwrap();
        assert!(e.is_new() && e.text().is_empty());
        e.replace("a\n").unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
    }

    #[test]
    fn concurrent_edits_are_not_lost() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("keys");
        let params = argon2::Params::new(7 * 1024, 1, 1, None).unwrap();
        let h = crate::keys::hash_secret(b"s", params).unwrap();
        std::fs::write(&p, format!("first:{h}\n")).unwrap();
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let (p, h) = (p.clone(), h.clone());
                std::thread::spawn(move || {
                    let e = Editing::open(&p, false).unwrap();
                    let text =
                        crate::keys::edit::add(e.text(), &format!("k{i}"), &h, None, None).unwrap();
                    // Widen the window between read and rename.
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    e.replace(&text).unwrap();
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let keys = crate::keys::parse_keys(&std::fs::read_to_string(&p).unwrap()).unwrap();
        assert_eq!(keys.len(), 9, "every add survived");
    }

    #[test]
    fn unsafe_files_and_folders_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let real = d.path().join("real");
        std::fs::write(&real, "x\n").unwrap();
        let link = d.path().join("keys");
        symlink(&real, &link).unwrap();
        let e = Editing::open(&link, false).err().unwrap();
        assert!(e.contains("symbolic link"), "{e}");
        std::fs::set_permissions(&real, Permissions::from_mode(0o646)).unwrap();
        let e = Editing::open(&real, false).err().unwrap();
        assert!(e.contains("world-writable"), "{e}");
        let sub = d.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        let e = Editing::open(&sub, false).err().unwrap();
        assert!(e.contains("not a regular file"), "{e}");
        let open = d.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, Permissions::from_mode(0o777)).unwrap();
        let e = Editing::open(&open.join("keys"), true).err().unwrap();
        assert!(e.contains("folder") && e.contains("world-writable"), "{e}");
    }
}
