"""The istioctl programs, run as subprocesses from DIR/bin against a sandbox cluster.

Two versions on each side of the 1.27 proxy-status change are installed as revisions; every
check compares output against the upstream shapes in ../shared/reference/istio.md.
"""

from __future__ import annotations

import json
import re

import pytest

from meshops.sandbox.istio.harness import MeshHarness

OLD = ["1.25.2", "1.26.3"]  # NAME CLUSTER CDS LDS EDS RDS ECDS ISTIOD VERSION
NEW = ["1.27.1", "1.28.0"]  # NAME CLUSTER ISTIOD VERSION SUBSCRIBED TYPES
APP = {"apiVersion": "apps/v1", "kind": "Deployment",
       "metadata": {"name": "web", "labels": {"app": "web"}},
       "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                             "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}}}


def rev(v):
    return v.replace(".", "-")


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    """1.25.2 installed revisioned at start with the app in `app-old`; the other versions installed by test."""
    with MeshHarness(tmp_path_factory.mktemp("istioctl"), ["blue"],
                     {"istio": OLD[0], "istio_versions": OLD + NEW, "revision": rev(OLD[0]), "route53": False}) as m:
        c = m.cluster("blue")
        c.api.create(("", "namespaces"), {"metadata": {"name": "app-old", "labels": {"istio.io/rev": rev(OLD[0])}}})
        c.api.create(("apps", "deployments"), dict(APP), namespace="app-old")
        yield m


def ok(result):
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def wait_pods(mesh, namespace, predicate, timeout=10.0):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pods, _ = mesh.cluster("blue").store.list(("", "pods"), namespace)
        running = [p for p in pods if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")]
        if running and all(predicate(p) for p in running) and len(running) == 2:
            return running
        time.sleep(0.05)
    raise AssertionError(f"pods in {namespace} never matched")


def test_programs_written(mesh):
    names = sorted(p.name for p in (mesh.dir / "bin").iterdir())
    assert names == ["istioctl", *(f"istioctl-{v}" for v in sorted(OLD + NEW))]
    assert ok(mesh.istioctl(None, "version", "--remote=false")).strip() == OLD[0]
    assert ok(mesh.istioctl("1.28.0", "version", "--remote=false")).strip() == "1.28.0"


def test_install_each_version_as_revision(mesh):
    for v in [OLD[1], *NEW]:
        out = ok(mesh.istioctl(v, "install", "-y", "--revision", rev(v), "--set", "profile=minimal"))
        assert out.splitlines()[:2] == ["✔ Istio core installed ⛵️", "✔ Istiod installed 🧠"]
        assert "✔ Installation complete" in out
        assert "Made this installation the default" not in out  # 1.25.2 already is
        c = mesh.cluster("blue")
        ns = f"app-{rev(v)}"
        c.api.create(("", "namespaces"), {"metadata": {"name": ns, "labels": {"istio.io/rev": rev(v)}}})
        c.api.create(("apps", "deployments"), dict(APP), namespace=ns)
    for v in OLD + NEW:
        ns = "app-old" if v == OLD[0] else f"app-{rev(v)}"
        pods = wait_pods(mesh, ns, lambda p: p["status"].get("conditions", [{}])[-1].get("status") == "True"
                         and any(c["name"] == "istio-proxy" for c in p["spec"]["containers"]))
        for p in pods:
            proxy = next(c for c in p["spec"]["containers"] if c["name"] == "istio-proxy")
            assert proxy["image"] == f"docker.io/istio/proxyv2:{v}"
            assert json.loads(p["metadata"]["annotations"]["sidecar.istio.io/status"])["revision"] == rev(v)


@pytest.mark.parametrize("version", OLD)
def test_proxy_status_before_1_27(mesh, version):
    lines = ok(mesh.istioctl(version, "proxy-status")).splitlines()
    assert lines[0].split() == ["NAME", "CLUSTER", "CDS", "LDS", "EDS", "RDS", "ECDS", "ISTIOD", "VERSION"]
    # tabwriter padding 5: columns start where the header's words start
    assert lines[0].index("CLUSTER") - len("NAME") >= 5
    rows = [line for line in lines[1:] if ".app-" in line]
    assert len(rows) == 8
    for row in rows:
        cells = re.split(r" {5,}", row.strip())
        name, cluster, cds, lds, eds, rds, ecds, istiod, ver = cells
        ns_rev = name.rsplit(".", 1)[1].removeprefix("app-")
        expected = OLD[0] if ns_rev == "old" else ns_rev.replace("-", ".")
        assert cluster == "Kubernetes"
        for cell in (cds, lds, eds, rds):
            assert re.fullmatch(r"SYNCED \(\d+[smh]\S*\)", cell)  # ages appear from 1.23
        assert ecds == "IGNORED"
        assert istiod.startswith(f"istiod-{rev(expected)}-")
        assert ver == expected


@pytest.mark.parametrize("version", NEW)
def test_proxy_status_from_1_27(mesh, version):
    lines = ok(mesh.istioctl(version, "proxy-status")).splitlines()
    assert re.split(r" {5,}", lines[0].strip()) == ["NAME", "CLUSTER", "ISTIOD", "VERSION", "SUBSCRIBED TYPES"]
    rows = [line for line in lines[1:] if ".app-" in line]
    assert len(rows) == 8
    for row in rows:
        name, cluster, istiod, ver, subscribed = re.split(r" {5,}", row.strip())
        assert re.fullmatch(r"web-\S+\.app-\S+", name) and cluster == "Kubernetes"
        assert subscribed == "5 (CDS,LDS,EDS,RDS,ECDS)"
        assert istiod.startswith(f"istiod-{rev(ver)}-")
    verbose = ok(mesh.istioctl(version, "proxy-status", "-v", "1")).splitlines()
    assert re.split(r" {5,}", verbose[0].strip()) == ["NAME", "CLUSTER", "ISTIOD", "VERSION", "CDS", "ECDS", "EDS",
                                                      "LDS", "RDS"]


@pytest.mark.parametrize("version", [OLD[0], NEW[1]])
def test_proxy_status_json_is_one_document_per_istiod(mesh, version):
    out = ok(mesh.istioctl(version, "proxy-status", "-o", "json"))
    decoder, docs, pos = json.JSONDecoder(), [], 0
    while pos < len(out.strip()):
        doc, pos = decoder.raw_decode(out, pos)
        docs.append(doc)
        while pos < len(out) and out[pos].isspace():
            pos += 1
    assert len(docs) == 4  # not an array: one DiscoveryResponse per istiod, concatenated
    for doc in docs:
        ident = json.loads(doc["controlPlane"]["identifier"])
        assert ident["Component"] == "istiod" and ident["ID"].startswith("istiod-")
        for res in doc["resources"]:
            assert res["node"]["metadata"]["ISTIO_VERSION"] == ident["Info"]["version"]
            assert {c["configStatus"] for c in res["genericXdsConfigs"]} <= {"SYNCED", "NOT_SENT", "STALE"}


def test_version_reports_every_revision(mesh):
    out = ok(mesh.istioctl(NEW[0], "version")).splitlines()
    assert out[0] == f"client version: {NEW[0]}"
    assert sorted(line for line in out if line.startswith("istiod version:")) == sorted(
        f"istiod version: {v}" for v in OLD + NEW)  # revisioned istiod pods are labelled istio=istiod
    (dp,) = [line for line in out if line.startswith("data plane version:")]
    # 1.25.2 also runs the ingress gateway of the default profile installed at start
    assert dp == "data plane version: 1.25.2 (3 proxies), 1.26.3 (2 proxies), 1.27.1 (2 proxies), 1.28.0 (2 proxies)"
    doc = json.loads(ok(mesh.istioctl(OLD[1], "version", "-o", "json")))
    assert doc["clientVersion"]["version"] == OLD[1] and doc["clientVersion"]["status"] == "Clean"
    assert {m["Component"] for m in doc["meshVersion"]} == {"istiod"}
    assert {m["Revision"] for m in doc["meshVersion"]} == {rev(v) for v in OLD + NEW}
    by_id = {d["ID"]: d for d in doc["dataPlaneVersion"]}
    assert all(d["Type"] == "sidecar" for i, d in by_id.items() if ".app-" in i)
    assert {d["IstioVersion"] for i, d in by_id.items() if i.endswith(".app-old")} == {OLD[0]}


def test_tags(mesh):
    ok(mesh.istioctl(NEW[0], "tag", "set", "prod-stable", "--revision", rev(OLD[1])))
    clash = mesh.istioctl(NEW[0], "tag", "set", "prod-stable", "--revision", rev(NEW[0]))
    assert clash.returncode == 1 and 'revision tag "prod-stable" already exists, and --overwrite is false' in clash.stderr
    out = ok(mesh.istioctl(NEW[0], "tag", "set", "prod-stable", "--revision", rev(NEW[0]), "--overwrite"))
    assert out.startswith(f'Revision tag "prod-stable" created, referencing control plane revision "{rev(NEW[0])}"')
    mesh.cluster("blue").api.create(("", "namespaces"), {"metadata": {"name": "tagged",
                                                                      "labels": {"istio.io/rev": "prod-stable"}}})
    table = ok(mesh.istioctl(NEW[0], "tag", "list")).splitlines()
    assert table[0].split() == ["TAG", "REVISION", "NAMESPACES"]
    assert ["prod-stable", rev(NEW[0]), "tagged"] in [r.split() for r in table]
    assert ["default", rev(OLD[0])] in [r.split() for r in table]
    listed = json.loads(ok(mesh.istioctl(NEW[0], "tag", "list", "-o", "json")))
    assert {"tag": "prod-stable", "revision": rev(NEW[0]), "namespaces": ["tagged"]} in listed
    generated = ok(mesh.istioctl(NEW[0], "tag", "generate", "canary", "--revision", rev(NEW[1])))
    assert "name: istio-revision-tag-canary" in generated and "istiod-1-28-0" in generated
    removed = mesh.istioctl(NEW[0], "tag", "remove", "prod-stable", stdin="n\n")
    assert 'Caution, found 1 namespace(s) still injected by tag "prod-stable": tagged' in removed.stdout
    assert "Aborting operation." in removed.stdout
    assert ok(mesh.istioctl(NEW[0], "tag", "remove", "prod-stable", "-y")) == "Revision tag prod-stable removed\n"
    gone = mesh.istioctl(NEW[0], "tag", "remove", "prod-stable", "-y")
    assert gone.returncode == 1 and "cannot find MutatingWebhookConfiguration for tag" in gone.stderr


def test_refuses_second_default_revision(mesh):
    result = mesh.istioctl(NEW[1], "install", "-y", "--set", "profile=minimal")
    assert result.returncode == 1
    assert 'the default revision is "1-25-2"' in result.stderr


def test_analyze_flags_proxy_image_mismatch_and_exit_codes(mesh):
    c = mesh.cluster("blue")
    ns = c.api.get(("", "namespaces"), None, f"app-{rev(OLD[1])}").obj
    body = json.loads(json.dumps(ns))
    body["metadata"]["labels"]["istio.io/rev"] = rev(NEW[1])  # relabel, no restart yet
    c.api.update(("", "namespaces"), body)
    res = mesh.istioctl(NEW[1], "analyze", "-n", f"app-{rev(OLD[1])}")
    assert res.returncode == 0  # IST0158 is a Warning; the default failure threshold is Error
    assert "IST0105" not in res.stdout  # retired since 1.18 (reference §4)
    lines = [line for line in res.stdout.splitlines() if "IST0158" in line]
    assert len(lines) == 1  # one per namespace, naming its pods
    assert lines[0].startswith(f"Warning [IST0158] (Namespace app-{rev(OLD[1])}) The Istio proxy images of the pods "
                               "running in the namespace do not match the image defined in the injection "
                               "configuration (pod names: [web-")
    failing = mesh.istioctl(NEW[1], "analyze", "-n", f"app-{rev(OLD[1])}", "--failure-threshold", "Warning")
    assert failing.returncode == 79
    assert "Error: Analyzers found issues when analyzing namespace: app-1-26-3." in failing.stderr
    items = json.loads(ok(mesh.istioctl(NEW[1], "analyze", "-n", f"app-{rev(OLD[1])}", "-o", "json")))
    assert {i["code"] for i in items} == {"IST0158"}
    assert items[0]["documentationUrl"] == "https://istio.io/v1.28/docs/reference/config/analysis/ist0158/"
    assert items[0]["origin"] == f"Namespace app-{rev(OLD[1])}"
    clean = mesh.istioctl(NEW[1], "analyze", "-n", f"app-{rev(NEW[1])}")
    assert clean.returncode == 0 and clean.stdout == ""
    assert clean.stderr == f"✔ No validation issues found when analyzing namespace: app-{rev(NEW[1])}.\n"
    assert mesh.istioctl(NEW[1], "analyze", "--bogus").returncode == 64


def test_precheck_and_uninstall(mesh):
    pre = mesh.istioctl(NEW[1], "x", "precheck")
    assert pre.returncode == 0 and pre.stdout == ""
    assert pre.stderr.startswith("✔ No issues found when checking the cluster. Istio is safe to install or upgrade!")
    out = ok(mesh.istioctl(NEW[1], "uninstall", "--revision", rev(NEW[1]), "-y"))
    assert out.startswith(f"There are still 2 proxies pointing to the control plane revision {rev(NEW[1])}\n")
    assert "  Removed Deployment:istio-system:istiod-1-28-0." in out
    assert out.rstrip().endswith("✔ Uninstall complete")
    remaining = ok(mesh.istioctl(NEW[1], "version")).splitlines()
    assert "pilot version: 1.28.0" not in remaining
    usage = mesh.istioctl(NEW[1], "uninstall")
    assert usage.returncode == 64 and "--revision" in usage.stderr


def test_install_prompt_wording_by_version(mesh):
    old = mesh.istioctl("1.25.2", "install", "--revision", "x", stdin="n\n")
    assert old.stdout.startswith('This will install the Istio 1.25.2 profile "default" into the cluster. Proceed? (y/N)')
    assert old.returncode == 1
