"""Validate image/k8s/*.yaml: every document against the Kubernetes OpenAPI schemas
(kubernetes-validate, offline, strict: unknown fields are errors), then the security
settings the appliance relies on. Run by tests/deploy_files.rs; exit 0 only if all hold.

usage: k8s_manifests.py K8S_DIR EXPECTED_UID
"""

import glob
import os
import sys

import kubernetes_validate
import yaml

K8S_VERSION = "1.33"


def main() -> None:
    folder, uid = sys.argv[1], int(sys.argv[2])
    docs = []
    for path in sorted(glob.glob(os.path.join(folder, "*.yaml"))):
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if doc is not None:
                    docs.append((os.path.basename(path), doc))
    assert docs, f"no manifests in {folder}"
    for name, doc in docs:
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            sys.exit(f"{name}: {doc.get('kind')} does not validate against Kubernetes {K8S_VERSION}: {e.message} at {list(e.path)}")
    by_kind = {}
    for name, doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)

    (deploy,) = by_kind["Deployment"]
    pod = deploy["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] == uid and psc["runAsGroup"] == uid, psc
    assert psc["seccompProfile"] == {"type": "Localhost", "localhostProfile": "llama-gguf-inference/seccomp.json"}, psc
    (c,) = pod["containers"]
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True, sc
    assert sc["readOnlyRootFilesystem"] is True, sc
    assert sc["allowPrivilegeEscalation"] is False, sc
    assert sc.get("privileged", False) is False, sc
    assert sc["capabilities"] == {"drop": ["ALL"]}, sc
    assert sc["seccompProfile"]["localhostProfile"].endswith("seccomp.json"), sc
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1, c["resources"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"api": 8443, "health": 9090}, ports
    assert c["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "health"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/health", "port": "health"}
    assert c["startupProbe"]["httpGet"]["port"] == "health"
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["config"]["mountPath"] == "/etc/llama-gguf-inference" and mounts["config"]["readOnly"] is True
    assert mounts["model"]["mountPath"] == "/models" and mounts["model"]["readOnly"] is True
    # Nothing else is writable but the certificate folder and /tmp.
    assert {n for n, m in mounts.items() if not m.get("readOnly")} == {"state", "tmp"}, mounts
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "secret" in volumes["config"], "config and keys come from a Secret"
    assert volumes["model"]["persistentVolumeClaim"]["readOnly"] is True

    (svc,) = by_kind["Service"]
    targets = [p["targetPort"] for p in svc["spec"]["ports"]]
    assert targets == ["api"], f"the Service must expose the API port only, not {targets}"

    print(f"validated {len(docs)} documents against Kubernetes {K8S_VERSION}; security fields hold")


if __name__ == "__main__":
    main()
