//! The deployment files that cannot run here: the CUDA Dockerfile (no registry, no GPU)
//! must match the CPU one (which tests/container_image.rs builds and runs) in every
//! stage except its build base and cargo features, and the Kubernetes manifests must
//! validate against the Kubernetes schemas and keep the appliance's security settings.

use std::path::Path;
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Dockerfile instructions (continuations joined, comments and blank lines dropped).
fn instructions(file: &str) -> Vec<String> {
    let text = std::fs::read_to_string(repo().join(file)).unwrap();
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && current.is_empty()) {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part.trim());
                current.push(' ');
            }
            None => {
                current.push_str(t);
                out.push(current.split_whitespace().collect::<Vec<_>>().join(" "));
                current.clear();
            }
        }
    }
    out
}

#[test]
fn the_cuda_dockerfile_matches_the_cpu_one_except_base_and_features() {
    let cpu = instructions("image/Dockerfile.cpu");
    let cuda = instructions("image/Dockerfile.cuda");
    // The only differences allowed, in the CPU and CUDA files.
    let cpu_only = [
        "FROM llama-gguf-inference/build-base:cpu AS build",
        "ENV CARGO_FEATURES=\"\"",
    ];
    let cuda_only = [
        "FROM llama-gguf-inference/build-base:cuda AS build",
        "ENV CARGO_FEATURES=\"cuda\"",
        "ENV CMAKE_CUDA_ARCHITECTURES=\"80-real;86-real;89-real;90-real\"",
    ];
    for l in cpu_only {
        assert!(cpu.iter().any(|x| x == l), "Dockerfile.cpu lost {l:?}");
    }
    for l in cuda_only {
        assert!(cuda.iter().any(|x| x == l), "Dockerfile.cuda lost {l:?}");
    }
    let strip = |v: &[String], drop: &[&str]| -> Vec<String> {
        v.iter()
            .filter(|l| !drop.contains(&l.as_str()))
            .cloned()
            .collect()
    };
    assert_eq!(
        strip(&cpu, &cpu_only),
        strip(&cuda, &cuda_only),
        "the two Dockerfiles differ beyond the build base and the features"
    );
    // What both images promise, spelled out (the CPU one is run by container_image.rs).
    for must in [
        "FROM scratch",
        "COPY --from=build /rootfs/ /",
        "USER 65532:65532",
        "ENTRYPOINT [\"/usr/local/bin/llama-gguf-inference\"]",
        "CMD [\"serve\", \"--config\", \"/etc/llama-gguf-inference/config.toml\"]",
        "STOPSIGNAL SIGTERM",
        "EXPOSE 8443 9090",
    ] {
        assert!(
            cuda.iter().any(|x| x == must),
            "Dockerfile.cuda lacks {must:?}"
        );
    }
    let health = cuda
        .iter()
        .find(|l| l.starts_with("HEALTHCHECK"))
        .expect("a HEALTHCHECK");
    assert!(
        health.contains("CMD [\"/usr/local/bin/llama-gguf-inference\", \"healthcheck\""),
        "{health}"
    );
    // The release build with the features; the CUDA one must not fall back to PTX JIT.
    assert!(cuda
        .iter()
        .any(|l| l.contains("cargo build --release --locked --features \"$CARGO_FEATURES\"")));
    // The shipped container config matches the image's mount points and ports.
    let config = std::fs::read_to_string(repo().join("image/config.toml")).unwrap();
    for must in [
        "listen = \"0.0.0.0:8443\"",
        "health_listen = \"0.0.0.0:9090\"",
        "self_signed_dir = \"/var/lib/llama-gguf-inference/tls\"",
        "keys_file = \"/etc/llama-gguf-inference/keys\"",
        "path = \"/models/model.gguf\"",
    ] {
        assert!(config.contains(must), "image/config.toml lacks {must:?}");
    }
    // The runtime root is assembled with exactly those mount points and user.
    let assemble = std::fs::read_to_string(repo().join("image/assemble-root")).unwrap();
    for must in [
        "APP_UID=65532",
        "/etc/llama-gguf-inference",
        "/models",
        "/var/lib/llama-gguf-inference",
        "libcuda\\.so\\.1",
    ] {
        assert!(
            assemble.contains(must),
            "image/assemble-root lacks {must:?}"
        );
    }
}

/// Run tests/k8s_manifests.py on a folder of manifests.
fn check_manifests(python: &Path, folder: &Path) -> std::process::Output {
    Command::new(python)
        .arg(repo().join("tests/k8s_manifests.py"))
        .arg(folder)
        .arg("65532")
        .output()
        .unwrap()
}

#[test]
fn the_kubernetes_manifests_validate_and_keep_the_security_settings() {
    let python = repo().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} missing: run `.ci/setup --sdk` (make test does)",
        python.display()
    );
    let out = check_manifests(&python, &repo().join("image/k8s"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("validated 4 documents"), "{text}");

    // The checker itself refuses a weakened manifest (so it can fail).
    let dir = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(repo().join("image/k8s")).unwrap() {
        let p = f.unwrap().path();
        let mut text = std::fs::read_to_string(&p).unwrap();
        if p.file_name().unwrap() == "deployment.yaml" {
            text = text.replace(
                "readOnlyRootFilesystem: true",
                "readOnlyRootFilesystem: false",
            );
        }
        std::fs::write(dir.path().join(p.file_name().unwrap()), text).unwrap();
    }
    let out = check_manifests(&python, dir.path());
    assert!(
        !out.status.success(),
        "a writable root filesystem was accepted"
    );
    // And a schema error (a misspelt field) is caught by the Kubernetes schema.
    let deployment = std::fs::read_to_string(repo().join("image/k8s/deployment.yaml")).unwrap();
    std::fs::write(
        dir.path().join("deployment.yaml"),
        deployment.replace("readinessProbe:", "readinesProbe:"),
    )
    .unwrap();
    let out = check_manifests(&python, dir.path());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && text.contains("does not validate"),
        "{text}"
    );
}
