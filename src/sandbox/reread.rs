//! Files the server re-reads after lock-down, on SIGHUP: the keys file and the TLS pair.
//! Renewals usually put a new file in place (editors and `mv` write a new inode; an ACME
//! client adds files to its archive folder and moves links; Kubernetes swaps a volume's
//! folder behind `..data`), and a Landlock rule on the old inode would refuse the new
//! one. So a rule here may cover a folder, and a rule on a folder covers its whole
//! subtree: each such rule is given only where that folder holds nothing but what the
//! server may read anyway.
//!
//! SECURITY: every rule grants reading files only (not listing, never writing). Folder
//! rules need a folder of the server's own files (`foreign_entries`), or, for an ACME
//! archive folder, one holding nothing but that certificate's own numbered files. A
//! layout that cannot be covered that narrowly is refused at start-up with what to do,
//! or, for a plain file in a shared folder, covered as that file alone (renew it in
//! place).

use super::landlock::{read_file, FsRule};
use crate::config::Config;
use std::path::{Path, PathBuf};

/// The keys file is re-read on SIGHUP (key rotation). SECURITY / operability: rotation
/// usually replaces the file (editors and `mv` write a new inode; Kubernetes swaps a
/// Secret's folder behind a symlink), and a Landlock rule on the old inode would refuse
/// the new one. So the rule covers reading files in the keys file's folder (not listing
/// it) — and a Landlock rule on a folder covers its whole subtree. It is therefore given
/// only when that folder holds nothing but the appliance's own files (`own_entry`);
/// otherwise the config is refused with what to do (issue 16: `keys_file =
/// "/var/lib/keys"` made all of /var/lib readable). A folder that cannot be listed gets a
/// rule for the file alone (rotation must then rewrite it in place).
pub fn keys_rule(cfg: &Config) -> Result<FsRule, String> {
    let keys_file = &cfg.auth.keys_file;
    let dir = folder_of(keys_file);
    let Some(foreign) = foreign_entries(cfg, &dir) else {
        return Ok(FsRule {
            path: keys_file.to_path_buf(),
            access: read_file(),
            why: "auth.keys_file: re-read on SIGHUP (its folder cannot be listed, so only this inode: rotate by rewriting it in place)".into(),
            required: true,
        });
    };
    if !foreign.is_empty() {
        return Err(format!(
            "auth.keys_file: its folder {} also holds files that are not this server's ({}). \
             Key rotation needs read access to the keys file's whole folder, which would make \
             those readable too. Move the keys file into a folder of its own (the config and \
             TLS files may share it), e.g. /etc/llama-gguf-inference/keys, and write a log \
             file or any other output elsewhere (e.g. /var/log/llama-gguf-inference)",
            dir.display(),
            shown(&foreign),
        ));
    }
    Ok(FsRule {
        path: dir,
        access: read_file(),
        why: "auth.keys_file's folder (holds only this server's files): the keys file is re-read on SIGHUP, also after it was replaced (read files, not list)".into(),
        required: true,
    })
}

/// The first five names, and how many more.
fn shown(names: &[String]) -> String {
    let first: Vec<&str> = names.iter().take(5).map(String::as_str).collect();
    match names.len().saturating_sub(first.len()) {
        0 => first.join(", "),
        more => format!("{} and {more} more", first.join(", ")),
    }
}

/// The appliance's own files a keys folder may share: the config file, TLS material, the
/// user-tag key, the model and paths the operator already granted.
fn own_files(cfg: &Config) -> Vec<PathBuf> {
    let mut own: Vec<PathBuf> = [
        cfg.source.clone(),
        cfg.tls.cert.clone(),
        cfg.tls.key.clone(),
        cfg.tls.self_signed_dir.clone(),
        cfg.logging.user_tag_key_file.clone(),
        Some(cfg.model.path.clone()),
    ]
    .into_iter()
    .flatten()
    .collect();
    own.extend(cfg.sandbox.extra_read_paths.iter().cloned());
    own
}

/// The same file, however each is named (`--config data/config.toml` leaves relative
/// paths beside absolute ones).
fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// Whether a folder entry is the appliance's: the re-read file itself, a rotation temporary of
/// it (`keys.new`, `keys~`, `.keys.swp`), Kubernetes' Secret-volume bookkeeping (`..data`
/// and the timestamped folders beside it), or one of `own`.
fn own_entry(path: &Path, reread: &Path, own: &[PathBuf]) -> bool {
    let (Some(name), Some(reread_name)) = (
        path.file_name().and_then(|n| n.to_str()),
        reread.file_name().and_then(|n| n.to_str()),
    ) else {
        return false;
    };
    name == reread_name
        || name.starts_with(&format!("{reread_name}."))
        || name.starts_with(&format!("{reread_name}~"))
        || name.starts_with(&format!(".{reread_name}"))
        || name.starts_with("..")
        || own.iter().any(|o| same_file(o, path))
}

/// The TLS pair's rules. A configured `tls.cert`/`tls.key` is re-read on SIGHUP; which
/// layouts are supported, and how far each rule reaches:
/// - a plain file in a folder of the server's own files: that folder (renew by `mv`);
/// - a plain file in a shared folder: the file alone (renew by rewriting it in place);
/// - a Kubernetes Secret volume (the file links through `..data` inside its folder): the
///   folder, which must hold only the server's files;
/// - an ACME client's `live/NAME/FILE` linking into `archive/NAME/FILEn.pem` (certbot):
///   the archive folder, which must hold only `cert`/`chain`/`fullchain`/`privkey` files.
///
/// Any other link is refused. A self-signed pair is not reloaded: its two files, read
/// once at start-up, are covered as files.
pub fn tls_rules(cfg: &Config) -> Result<Vec<FsRule>, String> {
    let files: Vec<(PathBuf, &str)> = match (&cfg.tls.cert, &cfg.tls.key) {
        (Some(c), Some(k)) => vec![(c.clone(), "tls.cert"), (k.clone(), "tls.key")],
        _ => {
            let Some(d) = &cfg.tls.self_signed_dir else {
                return Ok(vec![]);
            };
            let (cert, key) = crate::tls::stored_paths(d);
            return Ok([cert, key]
                .into_iter()
                .map(|path| FsRule {
                    path,
                    access: read_file(),
                    why: "tls.self_signed_dir: TLS material (loaded before lock-down; read-only)"
                        .into(),
                    required: true,
                })
                .collect());
        }
    };
    files
        .into_iter()
        .map(|(path, key)| tls_rule(cfg, &path, key))
        .collect()
}

fn tls_rule(cfg: &Config, path: &Path, key: &str) -> Result<FsRule, String> {
    let rule = |path: &Path, why: String| FsRule {
        path: path.to_path_buf(),
        access: read_file(),
        why,
        required: true,
    };
    let dir = folder_of(path);
    let is_link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    if !is_link {
        return Ok(match foreign_entries(cfg, &dir) {
            Some(f) if f.is_empty() => rule(&dir, format!("{key}'s folder (only this server's files): re-read on SIGHUP, also after the file was replaced")),
            _ => rule(path, format!("{key}: re-read on SIGHUP; its folder holds other files, so this file alone: renew it by rewriting it in place (cp over it, not mv)")),
        });
    }
    let target = std::fs::canonicalize(path)
        .map_err(|e| format!("{key}: cannot follow the link {}: {e}", path.display()))?;
    let target_dir = folder_of(&target);
    let real_dir = std::fs::canonicalize(&dir).unwrap_or_else(|_| dir.clone());
    if target_dir.starts_with(&real_dir) {
        // Kubernetes: tls.crt -> ..data/tls.crt, ..data -> ..2026_12_04_.../
        return match foreign_entries(cfg, &dir) {
            Some(f) if f.is_empty() => Ok(rule(&dir, format!("{key}'s folder (a Kubernetes Secret volume: links through ..data; only this server's files): re-read on SIGHUP"))),
            f => Err(format!(
                "{key}: {} links into its own folder {}, which also holds files that are not this server's ({}); \
                 renewals replace the link's target, so the whole folder would have to be readable. \
                 Give the certificate and key a folder of their own",
                path.display(),
                dir.display(),
                f.map(|f| shown(&f)).unwrap_or_else(|| "it cannot be listed".into())
            )),
        };
    }
    if let Some(why) = acme_archive(&real_dir, &target_dir)? {
        return Ok(rule(&target_dir, format!("{key}: {why}")));
    }
    Err(format!(
        "{key}: {} is a link to {}, a layout certificate reloads cannot cover narrowly. Supported: \
         a plain file; a Kubernetes Secret volume (links through ..data in the same folder); an \
         ACME client's live/NAME/FILE -> archive/NAME/FILEn.pem (certbot). Point {key} at one of \
         those, or copy the files into a folder of their own",
        path.display(),
        target.display()
    ))
}

/// `Some(why)` when `live` is `.../live/NAME` and `archive` is `.../archive/NAME` beside
/// it (certbot's layout), holding only that certificate's numbered files; an archive
/// folder with anything else in it is refused (`Err`), another layout is `None`.
fn acme_archive(live: &Path, archive: &Path) -> Result<Option<String>, String> {
    let name = |p: &Path| p.file_name().map(|n| n.to_os_string());
    let parent_name = |p: &Path| {
        p.parent()
            .and_then(|q| q.file_name())
            .map(|n| n.to_os_string())
    };
    let beside = live.parent().and_then(Path::parent) == archive.parent().and_then(Path::parent);
    if !(beside
        && name(live) == name(archive)
        && parent_name(live).as_deref() == Some("live".as_ref())
        && parent_name(archive).as_deref() == Some("archive".as_ref()))
    {
        return Ok(None);
    }
    let entries = std::fs::read_dir(archive).map_err(|e| {
        format!(
            "cannot list the ACME archive folder {}: {e}",
            archive.display()
        )
    })?;
    let mut other: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !acme_file(n))
        .collect();
    if !other.is_empty() {
        other.sort();
        return Err(format!(
            "the ACME archive folder {} also holds {}: certificate reloads would make them readable. \
             It may hold only certN.pem, chainN.pem, fullchainN.pem and privkeyN.pem",
            archive.display(),
            other.join(", ")
        ));
    }
    Ok(Some(format!(
        "an ACME client's archive folder {} (live/NAME links into it; renewals add numbered files there), re-read on SIGHUP",
        archive.display()
    )))
}

/// `cert3.pem`, `chain3.pem`, `fullchain3.pem`, `privkey3.pem`.
fn acme_file(name: &str) -> bool {
    ["fullchain", "privkey", "chain", "cert"]
        .iter()
        .any(|stem| {
            name.strip_prefix(stem)
                .and_then(|r| r.strip_suffix(".pem"))
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
}

/// The folder a re-read file lives in and is replaced in (`.` for a bare name): the rules
/// here cover it, and the `keys` commands write their temporary there (`keys::replace`),
/// so both must name the same folder.
pub fn folder_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The names in `dir` that are not the server's own (`own_entry`), sorted; None when it
/// cannot be listed. A plain subfolder holding the configured TLS pair (the
/// `/etc/llama-gguf-inference/tls/` of the reference config) is the server's own when
/// it holds nothing else.
fn foreign_entries(cfg: &Config, dir: &Path) -> Option<Vec<String>> {
    foreign_entries_in(cfg, dir, MAX_OWN_SUBFOLDER_DEPTH)
}

/// How deep a TLS subfolder of a re-read folder is looked into (`tls/` is one level).
const MAX_OWN_SUBFOLDER_DEPTH: usize = 2;

fn foreign_entries_in(cfg: &Config, dir: &Path, depth: usize) -> Option<Vec<String>> {
    let entries = std::fs::read_dir(dir).ok()?;
    let tls_folder = |p: &Path| {
        depth > 0
            && std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir())
            && [cfg.tls.cert.as_deref(), cfg.tls.key.as_deref()]
                .into_iter()
                .flatten()
                .any(|f| same_file(&folder_of(f), p))
            && foreign_entries_in(cfg, p, depth - 1).is_some_and(|f| f.is_empty())
    };
    let own = own_files(cfg);
    let reread: Vec<&Path> = [
        Some(cfg.auth.keys_file.as_path()),
        cfg.tls.cert.as_deref(),
        cfg.tls.key.as_deref(),
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut foreign: Vec<String> = entries
        .flatten()
        .filter(|e| {
            let path = e.path();
            !(reread.iter().any(|f| own_entry(&path, f, &own)) || tls_folder(&path))
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    foreign.sort();
    Some(foreign)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::landlock::access_names;

    fn config_in(dir: &Path, extra: &str) -> Config {
        let path = dir.join("config.toml");
        std::fs::write(
            &path,
            format!("[auth]\nkeys_file = \"keys\"\n[model]\npath = \"/models/m.gguf\"\n{extra}"),
        )
        .unwrap();
        std::fs::write(dir.join("keys"), "").unwrap();
        let mut cfg = Config::parse(&std::fs::read_to_string(&path).unwrap(), dir).unwrap();
        cfg.source = Some(path);
        cfg
    }

    #[test]
    fn the_keys_rule_covers_a_folder_of_the_servers_own_files_only() {
        let d = tempfile::tempdir().unwrap();
        // Own folder: the keys file, the config, the TLS state folder, a rotation
        // temporary and Kubernetes' Secret-volume entries.
        let cfg = config_in(d.path(), "[tls]\nself_signed_dir = \"tls\"\n");
        for own in ["tls", "..data", "..2026_12_03_07_00_00.1"] {
            std::fs::create_dir(d.path().join(own)).unwrap();
        }
        std::fs::write(d.path().join("keys.new"), "").unwrap();
        let r = keys_rule(&cfg).unwrap();
        assert_eq!(r.path, d.path());
        assert_eq!(access_names(r.access), "read_file");
        // Anything else in it (as in /var/lib) and the config is refused, saying what to do.
        std::fs::write(d.path().join("dpkg-status"), "").unwrap();
        std::fs::create_dir(d.path().join("postgresql")).unwrap();
        // The common mistake: the server's own log written beside its keys (issue 31).
        std::fs::write(d.path().join("server.log"), "").unwrap();
        let e = keys_rule(&cfg).unwrap_err();
        assert!(e.contains("dpkg-status, postgresql, server.log"), "{e}");
        assert!(
            e.contains("Move the keys file into a folder of its own"),
            "{e}"
        );
        assert!(
            e.contains("write a log file or any other output elsewhere"),
            "{e}"
        );
        let e = super::super::landlock::plan(&cfg, 1, 2, false)
            .err()
            .unwrap();
        assert!(e.starts_with("auth.keys_file:"), "{e}");
        // A folder that cannot be listed (here: does not exist) gets the file alone.
        let mut gone = cfg.clone();
        gone.auth.keys_file = d.path().join("missing/keys");
        let r = keys_rule(&gone).unwrap();
        assert_eq!(r.path, d.path().join("missing/keys"));
    }

    #[test]
    fn a_config_named_by_a_relative_path_is_still_the_servers_own_file() {
        let d = tempfile::tempdir().unwrap();
        let mut cfg = config_in(d.path(), "");
        // `--config ../../tmp/.tmpX/config.toml`: the same files, named relatively.
        let cwd = std::env::current_dir().unwrap();
        let up = "../".repeat(cwd.components().count() - 1);
        let rel = PathBuf::from(up).join(d.path().strip_prefix("/").unwrap());
        cfg.source = Some(rel.join("config.toml"));
        // The keys file named absolutely (as config-from-env writes it).
        assert!(cfg.auth.keys_file.is_absolute());
        let r = keys_rule(&cfg).unwrap();
        assert_eq!(std::fs::canonicalize(&r.path).unwrap(), d.path());
    }

    fn tls_config(dir: &Path, cert: &Path, key: &Path) -> Config {
        config_in(
            dir,
            &format!(
                "[tls]\ncert = {:?}\nkey = {:?}\n",
                cert.display().to_string(),
                key.display().to_string()
            ),
        )
    }

    fn paths(rules: &[FsRule]) -> Vec<PathBuf> {
        rules.iter().map(|r| r.path.clone()).collect()
    }

    #[test]
    fn plain_tls_files_get_their_folder_only_when_it_is_the_servers() {
        let d = tempfile::tempdir().unwrap();
        let (c, k) = (d.path().join("cert.pem"), d.path().join("key.pem"));
        std::fs::write(&c, "").unwrap();
        std::fs::write(&k, "").unwrap();
        let cfg = tls_config(d.path(), &c, &k);
        let rules = tls_rules(&cfg).unwrap();
        assert_eq!(paths(&rules), [d.path(), d.path()]);
        assert!(rules.iter().all(|r| access_names(r.access) == "read_file"));
        // A shared folder (e.g. /etc/ssl/private): each file alone, renewed in place.
        std::fs::write(d.path().join("other-service.key"), "").unwrap();
        let rules = tls_rules(&cfg).unwrap();
        assert_eq!(paths(&rules), [c.clone(), k.clone()]);
        assert!(rules[0].why.contains("in place"), "{}", rules[0].why);
    }

    #[test]
    fn the_reference_layout_with_a_tls_subfolder_beside_the_keys_is_accepted() {
        // /etc/llama-gguf-inference/{config.toml, keys, tls/{cert.pem, key.pem}}
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join("tls");
        std::fs::create_dir(&t).unwrap();
        let (c, k) = (t.join("cert.pem"), t.join("key.pem"));
        std::fs::write(&c, "").unwrap();
        std::fs::write(&k, "").unwrap();
        let cfg = tls_config(d.path(), &c, &k);
        assert_eq!(keys_rule(&cfg).unwrap().path, d.path());
        assert_eq!(paths(&tls_rules(&cfg).unwrap()), [t.clone(), t.clone()]);
        // Something else in tls/ makes it foreign to the keys folder, and the pair falls
        // back to its files alone.
        std::fs::write(t.join("someone-elses.key"), "").unwrap();
        let e = keys_rule(&cfg).unwrap_err();
        assert!(e.contains("(tls)"), "{e}");
        assert_eq!(paths(&tls_rules(&cfg).unwrap()), [c, k]);
    }

    #[test]
    fn a_kubernetes_secret_volume_is_covered_as_its_folder() {
        let d = tempfile::tempdir().unwrap();
        let m = d.path().join("tls");
        let stamp = m.join("..2026_12_04_10_00_00.123");
        std::fs::create_dir_all(&stamp).unwrap();
        std::fs::write(stamp.join("tls.crt"), "").unwrap();
        std::fs::write(stamp.join("tls.key"), "").unwrap();
        std::os::unix::fs::symlink("..2026_12_04_10_00_00.123", m.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/tls.crt", m.join("tls.crt")).unwrap();
        std::os::unix::fs::symlink("..data/tls.key", m.join("tls.key")).unwrap();
        let cfg = tls_config(d.path(), &m.join("tls.crt"), &m.join("tls.key"));
        let rules = tls_rules(&cfg).unwrap();
        assert_eq!(paths(&rules), [m.clone(), m.clone()]);
        assert!(rules[0].why.contains("Kubernetes"), "{}", rules[0].why);
        std::fs::write(m.join("ca-bundle-of-someone-else"), "").unwrap();
        let e = tls_rules(&cfg).unwrap_err();
        assert!(
            e.starts_with("tls.cert:") && e.contains("ca-bundle-of-someone-else"),
            "{e}"
        );
    }

    #[test]
    fn an_acme_live_folder_is_covered_through_its_archive_folder_only() {
        let d = tempfile::tempdir().unwrap();
        let live = d.path().join("letsencrypt/live/example.org");
        let archive = d.path().join("letsencrypt/archive/example.org");
        std::fs::create_dir_all(&live).unwrap();
        std::fs::create_dir_all(&archive).unwrap();
        for f in ["cert1.pem", "chain1.pem", "fullchain1.pem", "privkey1.pem"] {
            std::fs::write(archive.join(f), "").unwrap();
            let stem = f.replace('1', "");
            std::os::unix::fs::symlink(format!("../../archive/example.org/{f}"), live.join(stem))
                .unwrap();
        }
        std::fs::write(live.join("README"), "").unwrap();
        let cfg = tls_config(
            d.path(),
            &live.join("fullchain.pem"),
            &live.join("privkey.pem"),
        );
        let rules = tls_rules(&cfg).unwrap();
        let real = std::fs::canonicalize(&archive).unwrap();
        assert_eq!(paths(&rules), [real.clone(), real]);
        assert!(rules[1].why.contains("ACME"), "{}", rules[1].why);
        // Anything else in the archive folder would become readable: refused.
        std::fs::write(archive.join("notes.txt"), "").unwrap();
        let e = tls_rules(&cfg).unwrap_err();
        assert!(e.contains("notes.txt"), "{e}");
        std::fs::remove_file(archive.join("notes.txt")).unwrap();
        // A link anywhere else is refused, naming the supported layouts.
        let elsewhere = d.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::fs::write(elsewhere.join("c.pem"), "").unwrap();
        let own = d.path().join("own");
        std::fs::create_dir(&own).unwrap();
        std::os::unix::fs::symlink(elsewhere.join("c.pem"), own.join("c.pem")).unwrap();
        let cfg = tls_config(d.path(), &own.join("c.pem"), &live.join("privkey.pem"));
        let e = tls_rules(&cfg).unwrap_err();
        assert!(e.starts_with("tls.cert:") && e.contains("Supported"), "{e}");
    }
}
