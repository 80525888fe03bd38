//! `keys list|add|remove|rotate`: the operator's key management on the hashed keys file.
//!
//! SECURITY: a new secret is printed once, on stdout, as the credential clients send
//! (`ID:SECRET`); everything else goes to stderr, so `cred=$(... keys add ID ...)` holds
//! exactly the credential. No command prints a hash. Every change is validated whole
//! (`edit.rs`) and written atomically (`replace.rs`); the running server is untouched
//! until it is told to reload, which each command says how to do.

use super::edit::{self, Listed};
use super::replace::Editing;
use crate::config::Config;
use std::path::PathBuf;
use time::OffsetDateTime;

pub const HELP: &str = "\
llama-gguf-inference keys COMMAND (--config FILE | --file KEYS_FILE)

Manage the hashed keys file: auth.keys_file of the config FILE, or KEYS_FILE itself.
    keys list                     id, requests per minute, expiry, expired?, argon2
                                  parameters (never a hash)
    keys add ID [--rpm N] [--expires 30d|12h|2w|2027-01-31T00:00:00Z]
                                  a new key; prints its credential ID:SECRET once on
                                  stdout (creates the file, mode 0600, if there is none)
    keys remove ID                delete the key
    keys rotate ID                a new secret for ID, same limits; prints it once
--rpm: requests per minute for this key (0: unlimited; default: the config's).
Every change is checked with the server's own reader, written to a temporary file in the
same folder and renamed over the old one (mode and owner kept). A symbolic link, a
world-writable file or a world-writable folder is refused. The running server uses the
change after a reload: systemctl reload llama-gguf-inference, or kill -HUP its pid; in
Kubernetes, update the Secret and roll the Deployment out.
";

/// Told after every change: the running server has not seen it yet.
const RELOAD_HINT: &str = "The running server uses this after a reload: `systemctl reload llama-gguf-inference` or `kill -HUP <pid>`; in Kubernetes, put the file in the Secret and `kubectl rollout restart` the Deployment.";

/// One parsed `keys` command line.
#[derive(Debug, PartialEq, Eq)]
enum Action {
    List,
    Add {
        id: String,
        rpm: Option<u32>,
        expires: Option<String>,
    },
    Remove(String),
    Rotate(String),
}

/// Run `keys ARGS`; returns the exit code (2: usage, 1: refused or failed).
pub fn run(args: &[String]) -> i32 {
    let (action, file) = match parse(args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("llama-gguf-inference keys: {e}\n\n{HELP}");
            return 2;
        }
    };
    match file.and_then(|path| execute(action, path)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("llama-gguf-inference keys: {e}");
            1
        }
    }
}

fn parse(args: &[String]) -> Result<(Action, Result<PathBuf, String>), String> {
    let mut words = Vec::new();
    let (mut config, mut file, mut rpm, mut expires) = (None, None, None, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match a.as_str() {
            "--config" | "-c" => config = Some(value(a)?),
            "--file" => file = Some(value(a)?),
            "--rpm" => {
                let v = value(a)?;
                rpm =
                    Some(v.parse::<u32>().map_err(|_| {
                        format!("--rpm takes a whole number (0: unlimited), not {v:?}")
                    })?)
            }
            "--expires" => expires = Some(value(a)?),
            flag if flag.starts_with('-') => return Err(format!("unknown option {flag:?}")),
            word => words.push(word.to_string()),
        }
    }
    let action = match words.as_slice() {
        [c] if c == "list" => Action::List,
        [c, id] if c == "add" => Action::Add {
            id: id.clone(),
            rpm: rpm.take(),
            expires: expires.take(),
        },
        [c, id] if c == "remove" => Action::Remove(id.clone()),
        [c, id] if c == "rotate" => Action::Rotate(id.clone()),
        [] => return Err("which command: list, add, remove or rotate?".into()),
        _ => return Err(format!("unexpected arguments {words:?}")),
    };
    if rpm.is_some() || expires.is_some() {
        return Err("--rpm and --expires go with `keys add`".into());
    }
    let path = match (config, file) {
        (Some(c), None) => Ok(Config::load(std::path::Path::new(&c))
            .map(|cfg| cfg.auth.keys_file)
            .map_err(|e| e.to_string())),
        (None, Some(f)) => Ok(Ok(PathBuf::from(f))),
        (None, None) => Err("name the keys file: --config FILE or --file KEYS_FILE".to_string()),
        (Some(_), Some(_)) => Err("give --config or --file, not both".to_string()),
    }?;
    Ok((action, path))
}

fn execute(action: Action, path: PathBuf) -> Result<(), String> {
    let now = OffsetDateTime::now_utc();
    let shown = path.display().to_string();
    match action {
        Action::List => {
            let editing = Editing::open(&path, false)?;
            let keys = edit::list(editing.text(), now).map_err(|errors| {
                let why: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
                format!("{shown}: {}", why.join("; "))
            })?;
            print!("{}", table(&keys));
            Ok(())
        }
        Action::Add { id, rpm, expires } => {
            let expires = expires.map(|e| edit::parse_expires(&e, now)).transpose()?;
            let editing = Editing::open(&path, true)?;
            let (secret, hash) = new_secret()?;
            let text = edit::add(editing.text(), &id, &hash, rpm, expires)?;
            let created = editing.is_new();
            editing.replace(&text)?;
            println!("{id}:{secret}");
            eprintln!(
                "Added {id} to {shown} ({}, {}). Above is its credential, shown once: clients send it as `Authorization: Bearer {id}:<secret>`.",
                rpm_text(rpm),
                expires_text(expires)
            );
            if created {
                eprintln!("Created {shown} with mode 0600: the server's user must be able to read it for reloads (e.g. chown root:llama, chmod 0640).");
            }
            eprintln!("{RELOAD_HINT}");
            Ok(())
        }
        Action::Remove(id) => {
            let editing = Editing::open(&path, false)?;
            let text = edit::remove(editing.text(), &id)?;
            editing.replace(&text)?;
            eprintln!("Removed {id} from {shown}; after the reload its requests are refused.");
            eprintln!("{RELOAD_HINT}");
            Ok(())
        }
        Action::Rotate(id) => {
            let editing = Editing::open(&path, false)?;
            let (secret, hash) = new_secret()?;
            let text = edit::rotate(editing.text(), &id, &hash)?;
            editing.replace(&text)?;
            println!("{id}:{secret}");
            eprintln!("Rotated {id} in {shown}: above is its new credential, shown once; the old one works until the reload.");
            eprintln!("{RELOAD_HINT}");
            Ok(())
        }
    }
}

fn new_secret() -> Result<(String, String), String> {
    let secret = super::generate_secret()?;
    let hash = super::hash_secret(secret.as_bytes(), super::default_params())?;
    Ok((secret, hash))
}

fn rpm_text(rpm: Option<u32>) -> String {
    match rpm {
        None => "the default requests per minute".into(),
        Some(0) => "no request limit".into(),
        Some(n) => format!("{n} requests per minute"),
    }
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| at.to_string())
}

fn expires_text(at: Option<OffsetDateTime>) -> String {
    at.map_or("no expiry".into(), |e| format!("expires {}", rfc3339(e)))
}

/// `keys list`'s table: tab-separated, one header line.
fn table(keys: &[Listed]) -> String {
    let mut out = String::from("id\trequests_per_minute\texpires\texpired\targon2\n");
    for k in keys {
        let rpm = match k.requests_per_minute {
            None => "default".to_string(),
            Some(0) => "unlimited".to_string(),
            Some(n) => n.to_string(),
        };
        let expires = k.expires.map_or("never".to_string(), rfc3339);
        let (m, t, p) = k.argon2;
        out.push_str(&format!(
            "{}\t{rpm}\t{expires}\t{}\tm={m},t={t},p={p}\n",
            k.id,
            if k.expired { "yes" } else { "no" }
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn command_lines() {
        let (a, f) = parse(&args("add bob --rpm 5 --expires 30d --file /k")).unwrap();
        assert_eq!(
            a,
            Action::Add {
                id: "bob".into(),
                rpm: Some(5),
                expires: Some("30d".into())
            }
        );
        assert_eq!(f.unwrap(), PathBuf::from("/k"));
        assert_eq!(
            parse(&args("rotate a --file k")).unwrap().0,
            Action::Rotate("a".into())
        );
        for bad in [
            "list",
            "list --file k --config c",
            "remove a --rpm 3 --file k",
            "add --file k",
            "add a --rpm many --file k",
            "frob --file k",
            "list --file",
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn table_rows() {
        let at = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let keys = [
            Listed {
                id: "a".into(),
                requests_per_minute: None,
                expires: None,
                expired: false,
                argon2: (19456, 2, 1),
            },
            Listed {
                id: "b".into(),
                requests_per_minute: Some(0),
                expires: Some(at),
                expired: true,
                argon2: (7168, 1, 1),
            },
        ];
        assert_eq!(
            table(&keys),
            "id\trequests_per_minute\texpires\texpired\targon2\n\
             a\tdefault\tnever\tno\tm=19456,t=2,p=1\n\
             b\tunlimited\t2027-01-15T08:00:00Z\tyes\tm=7168,t=1,p=1\n"
        );
    }
}
