//! The unsafe fence: `unsafe` appears only in the modules that must make raw syscalls
//! (`src/sandbox/`) or call into llama.cpp (`src/engine/llama/`), and every use carries a
//! `// SAFETY:` comment right above it. The compiler enforces the first part too
//! (`#![deny(unsafe_code)]` in lib.rs, `#![allow(unsafe_code)]` only in those two
//! modules); this test keeps the attributes from being removed and checks the comments
//! (`// SAFETY:` above a block, a `# Safety` doc section above an `unsafe fn`).

use std::path::{Path, PathBuf};

/// Where `unsafe` may appear, relative to the package root.
const ALLOWED: [&str; 2] = ["src/sandbox/", "src/engine/llama/"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code part of a line: no `//` comment, no string literal contents.
fn code_of(line: &str) -> String {
    let mut out = String::new();
    let mut in_str = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => in_str = !in_str,
            '\\' if in_str => {
                chars.next();
            }
            '/' if !in_str && chars.peek() == Some(&'/') => break,
            _ if !in_str => out.push(c),
            _ => {}
        }
    }
    out
}

fn uses_unsafe(code: &str) -> bool {
    code.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .any(|w| w == "unsafe")
}

/// Sites of `unsafe` in one file: (line number, has a SAFETY comment above).
fn unsafe_sites(text: &str) -> Vec<(usize, bool)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut sites = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if !uses_unsafe(&code_of(line)) {
            continue;
        }
        // Walk up over the comment/attribute lines directly above the statement.
        let mut justified = false;
        let mut j = i;
        while j > 0 {
            j -= 1;
            let above = lines[j].trim_start();
            if above.starts_with("//") || above.starts_with("#[") {
                // `// SAFETY:` above a block; a `# Safety` doc section above an unsafe fn.
                if above.contains("SAFETY:") || above.contains("# Safety") {
                    justified = true;
                    break;
                }
            } else if above.ends_with('(') || above.ends_with(',') || above.ends_with('=') {
                // The unsafe block is inside a statement that starts higher up.
                continue;
            } else {
                break;
            }
        }
        sites.push((i + 1, justified));
    }
    sites
}

#[test]
fn unsafe_only_in_fenced_modules_and_always_justified() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    let mut outside = Vec::new();
    let mut unjustified = Vec::new();
    let mut count = 0;
    for f in &files {
        let rel = f
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        let text = std::fs::read_to_string(f).unwrap();
        for (line, justified) in unsafe_sites(&text) {
            if text.lines().nth(line - 1).unwrap().contains("unsafe_code") {
                continue; // the lint attributes themselves
            }
            count += 1;
            if !ALLOWED.iter().any(|a| rel.starts_with(a)) {
                outside.push(format!("{rel}:{line}"));
            }
            if !justified {
                unjustified.push(format!("{rel}:{line}"));
            }
        }
    }
    assert!(outside.is_empty(), "unsafe outside the fence: {outside:?}");
    assert!(
        unjustified.is_empty(),
        "unsafe without a // SAFETY: comment: {unjustified:?}"
    );
    assert!(count > 0, "the scan found the known unsafe sites");
}

#[test]
fn the_compiler_enforces_the_fence() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
    assert!(read("src/lib.rs").contains("#![deny(unsafe_code)]"));
    assert!(read("src/main.rs").contains("#![forbid(unsafe_code)]"));
    for m in ["src/sandbox/mod.rs", "src/engine/llama/mod.rs"] {
        assert!(read(m).contains("#![allow(unsafe_code)]"), "{m}");
    }
}

#[test]
fn the_scanner_sees_what_it_must() {
    let bad = "fn f() {\n    let x = unsafe { g() };\n}\n";
    assert_eq!(unsafe_sites(bad), vec![(2, false)]);
    let good = "// SAFETY: g has no preconditions.\nlet x = unsafe { g() };\n";
    assert_eq!(unsafe_sites(good), vec![(2, true)]);
    let nested = "// SAFETY: fine.\nlet rc = f(\n    unsafe { g() },\n";
    assert_eq!(unsafe_sites(nested), vec![(3, true)]);
    let unsafe_fn = "/// Sets it.\n///\n/// # Safety\n/// p must be valid.\n#[cfg(x)]\nunsafe fn f(p: *mut u8) {}\n";
    assert_eq!(unsafe_sites(unsafe_fn), vec![(6, true)]);
    let text = "let s = \"unsafe\"; // unsafe in a comment\n";
    assert!(unsafe_sites(text).is_empty());
}

/// The request path cannot panic on client input: the crate root denies
/// unwrap/expect/panic/indexing once for every module, so `cargo clippy -- -D warnings`
/// in CI fails on a new one anywhere. This keeps the attribute at the root and the
/// exemptions to the three modules that never see client input, each with its reason.
#[test]
fn request_path_modules_deny_panicking_constructs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lint = "#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing, clippy::unreachable, clippy::todo, clippy::unimplemented)]";
    let flat = |text: &str| -> String { text.chars().filter(|c| !c.is_whitespace()).collect() };
    let lib = std::fs::read_to_string(root.join("src/lib.rs")).unwrap();
    // rustfmt may wrap the attribute: compare without whitespace.
    assert!(
        flat(&lib).contains(&flat(lint)),
        "src/lib.rs lost the crate-wide lints"
    );
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    let mut exempt = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (i, line) in text.lines().enumerate() {
            let code = code_of(line);
            let panicky = [
                "unwrap_used",
                "expect_used",
                "clippy::panic",
                "indexing_slicing",
                "unreachable",
            ];
            if code.contains("allow(") && panicky.iter().any(|l| code.contains(l)) {
                let rel = file.strip_prefix(root).unwrap().display().to_string();
                // The reason is the comment just above the attribute.
                let above = text.lines().nth(i.wrapping_sub(1)).unwrap_or("");
                assert!(
                    above.trim_start().starts_with("//"),
                    "{rel}:{} allows a panicking construct without saying why",
                    i + 1
                );
                exempt.push(rel);
            }
        }
    }
    exempt.sort();
    assert_eq!(
        exempt,
        [
            "src/cli.rs",
            "src/engine/llama/mod.rs",
            "src/sandbox/mod.rs"
        ],
        "only these modules (no client input) may opt out of the crate-wide lints"
    );
    let llama = std::fs::read_to_string(root.join("src/engine/llama/mod.rs")).unwrap();
    let at = llama.find("#![allow(clippy::indexing_slicing)]").unwrap();
    assert!(llama[..at].contains("caught and answered"));
}
