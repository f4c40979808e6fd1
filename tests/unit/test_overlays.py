"""IstioOperator overlays: the field model, composition order, --set paths, and the profiles."""

from __future__ import annotations

import pytest
import yaml

from meshops.domain import overlays
from meshops.domain.overlays import Overlay, OverlayInvalid
from meshops.ops import install_overlay
from meshops.ops.install_overlay import render_install_overlay


def ov(spec: dict, source: str = "t") -> Overlay:
    return Overlay(source=source, spec=spec)


def problems(exc: pytest.ExceptionInfo[OverlayInvalid]) -> str:
    return "\n".join(exc.value.problems)


def test_later_overlays_win_and_maps_merge() -> None:
    """Maps merge key by key; the later value wins; other lists are replaced whole."""
    spec = overlays.compose([
        ov({"profile": "default", "values": {"pilot": {"traceSampling": 1.0, "autoscaleMin": 2}},
            "meshConfig": {"discoverySelectors": [{"a": 1}, {"b": 2}]}}),
        ov({"values": {"pilot": {"traceSampling": 10}}, "meshConfig": {"discoverySelectors": [{"c": 3}]}}),
    ])
    assert spec["values"]["pilot"] == {"traceSampling": 10, "autoscaleMin": 2}
    assert spec["meshConfig"]["discoverySelectors"] == [{"c": 3}]
    assert spec["profile"] == "default"


def test_gateways_merge_by_name() -> None:
    """A later overlay sets one gateway's resources without restating or dropping the others."""
    spec = overlays.compose([
        ov({"components": {"ingressGateways": [{"name": "istio-ingressgateway", "enabled": True},
                                               {"name": "internal", "enabled": True}]}}),
        ov({"components": {"ingressGateways": [{"name": "istio-ingressgateway",
                                                "k8s": {"resources": {"requests": {"cpu": "200m"}}}}]}}),
    ])
    gws = {g["name"]: g for g in spec["components"]["ingressGateways"]}
    assert gws["istio-ingressgateway"] == {"name": "istio-ingressgateway", "enabled": True,
                                           "k8s": {"resources": {"requests": {"cpu": "200m"}}}}
    assert gws["internal"] == {"name": "internal", "enabled": True}


def test_unknown_field_is_named_with_a_suggestion() -> None:
    """A typo deep in the spec names the whole path and the closest field."""
    text = "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nspec:\n  components:\n    pilot:\n      k8s:\n        resourcs: {}\n"
    with pytest.raises(OverlayInvalid) as exc:
        overlays.parse_overlay(text, "ours.yaml")
    assert problems(exc) == "ours.yaml: spec.components.pilot.k8s.resourcs: unknown field (did you mean 'resources'?)"


def test_wrong_types_are_named() -> None:
    """replicaCount must be a whole number, enabled a boolean, cpu a quantity; each is reported."""
    spec = {"components": {"pilot": {"enabled": "yes", "k8s": {"replicaCount": "two",
                                                               "resources": {"requests": {"cpu": "fast"}}}}}}
    found = overlays.check_spec(spec)
    assert "spec.components.pilot.enabled: expected true or false, got 'yes'" in found
    assert "spec.components.pilot.k8s.replicaCount: expected a whole number, got 'two'" in found
    assert any(p.startswith("spec.components.pilot.k8s.resources.requests.cpu: not a CPU quantity") for p in found)


def test_malformed_yaml_names_line_and_column() -> None:
    """Broken YAML is reported at its line and column."""
    with pytest.raises(OverlayInvalid) as exc:
        overlays.parse_overlay("spec:\n  values: [1\n", "broken.yaml")
    assert problems(exc).startswith("broken.yaml:3:1: not valid YAML")


def test_wrong_kind_and_top_level_fields() -> None:
    """Only IstioOperator documents with apiVersion/kind/metadata/spec are overlays."""
    with pytest.raises(OverlayInvalid) as exc:
        overlays.parse_overlay("kind: Deployment\nspce: {}\n", "x.yaml")
    assert "x.yaml: kind: expected IstioOperator, got 'Deployment'" in exc.value.problems
    assert "x.yaml: spce: unknown top-level field (did you mean 'spec'?)" in exc.value.problems


def test_gateway_without_name() -> None:
    """Gateways merge by name, so a gateway needs one."""
    assert "spec.components.ingressGateways[0].name: a gateway needs a name" in overlays.check_spec(
        {"components": {"ingressGateways": [{"enabled": True}]}})


def test_set_applies_typed_values() -> None:
    """--set types its value by the field: number, boolean, text, quantity."""
    spec: dict = {}
    for a in ("values.pilot.traceSampling=1", "components.pilot.enabled=true", "values.global.jwtPolicy=first-party-jwt",
              "spec.components.pilot.k8s.resources.requests.memory=1Gi", "tag=1.24"):
        overlays.apply_set(spec, a)
    assert spec == {"values": {"pilot": {"traceSampling": 1}, "global": {"jwtPolicy": "first-party-jwt"}},
                    "components": {"pilot": {"enabled": True, "k8s": {"resources": {"requests": {"memory": "1Gi"}}}}},
                    "tag": 1.24}


def test_set_unknown_path_names_the_field() -> None:
    """An unknown --set path names the first field IstioOperator does not have."""
    with pytest.raises(OverlayInvalid) as exc:
        overlays.apply_set({}, "values.pilot.traceSamplin=1")
    assert problems(exc) == ("--set values.pilot.traceSamplin=1: IstioOperator has no field "
                             "spec.values.pilot.traceSamplin (did you mean 'traceSampling'?)")


@pytest.mark.parametrize(("assignment", "message"), [
    ("components.pilot=true", "this is a section, not a single value"),
    ("components.pilot.enabled=maybe", "expected true or false, got 'maybe'"),
    ("values.global.proxy.resources.limits.cpu=lots", "not a CPU quantity"),
    ("components.pilot.enabled.x=1", "spec.components.pilot.enabled is a bool field, it has no field 'x'"),
    ("components.ingressGateways[3].enabled=true", "index [3] is past the end"),
    ("noequals", "expected PATH=VALUE"),
    ("values..pilot=1", "cannot read the path"),
])
def test_bad_set_assignments(assignment: str, message: str) -> None:
    """Each malformed --set says what is wrong with it."""
    with pytest.raises(OverlayInvalid) as exc:
        overlays.apply_set({}, assignment)
    assert message in problems(exc)


def test_set_selects_gateways_by_name_and_escapes_dots() -> None:
    """[name:x] finds or adds a gateway; a dotted annotation key is written with \\."""
    spec: dict = {"components": {"ingressGateways": [{"name": "istio-ingressgateway", "enabled": True}]}}
    overlays.apply_set(spec, "components.ingressGateways[name:istio-ingressgateway].k8s.replicaCount=3")
    overlays.apply_set(spec, "components.ingressGateways[name:internal].enabled=true")
    overlays.apply_set(spec, "components.pilot.k8s.podAnnotations.sidecar\\.istio\\.io/inject=false")
    gws = spec["components"]["ingressGateways"]
    assert gws == [{"name": "istio-ingressgateway", "enabled": True, "k8s": {"replicaCount": 3}},
                   {"name": "internal", "enabled": True}]
    assert spec["components"]["pilot"]["k8s"]["podAnnotations"] == {"sidecar.istio.io/inject": False}


def test_compose_reports_every_bad_set() -> None:
    """All bad --set flags are reported together, not only the first."""
    with pytest.raises(OverlayInvalid) as exc:
        overlays.compose([], ["values.nope=1", "components.pilot.enabled=yes"])
    assert len(exc.value.problems) == 2


def test_render_round_trips_and_is_stable() -> None:
    """The rendered overlay parses back to the same spec, keys sorted."""
    spec = {"values": {"pilot": {"traceSampling": 1.0}}, "components": {"pilot": {"enabled": True}}}
    text = overlays.render(spec)
    assert text == overlays.render({"components": {"pilot": {"enabled": True}}, "values": {"pilot": {"traceSampling": 1.0}}})
    assert overlays.parse_overlay(text, "r").spec == spec


# ---- the profiles in profiles/ ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["default", "demo", "minimal", "production", "minikube"])
def test_each_profile_parses_against_the_model(name: str) -> None:
    """Every shipped profile is a valid IstioOperator overlay."""
    assert overlays.check_spec(install_overlay.load_profile(name).spec) == []


def test_profiles_say_what_they_promise() -> None:
    """minimal: istiod only; production: HPA, PDB, anti-affinity, proxy resources, no demo extras; minikube: small, no jwtPolicy."""
    minimal = install_overlay.load_profile("minimal").spec
    assert minimal["profile"] == "minimal"
    assert all(not g["enabled"] for k in ("ingressGateways", "egressGateways") for g in minimal["components"][k])
    prod = install_overlay.load_profile("production").spec
    pilot = prod["components"]["pilot"]["k8s"]
    assert pilot["hpaSpec"]["minReplicas"] == 2 and pilot["podDisruptionBudget"] == {"minAvailable": 1}
    assert "podAntiAffinity" in pilot["affinity"]
    assert prod["components"]["ingressGateways"][0]["k8s"]["podDisruptionBudget"] == {"minAvailable": 1}
    assert prod["values"]["global"]["proxy"]["resources"]["requests"] == {"cpu": "100m", "memory": "128Mi"}
    assert prod["components"]["egressGateways"][0]["enabled"] is False
    assert prod["meshConfig"]["accessLogFile"] == "" and prod["values"]["pilot"]["traceSampling"] == 1.0
    minikube = install_overlay.load_profile("minikube").spec
    assert minikube["values"]["pilot"] == {"autoscaleEnabled": False}
    # Istio 1.22 dropped first-party-jwt (reference §7): the profile must not set it.
    assert "jwtPolicy" not in minikube["values"]["global"]


def test_composed_profiles_and_set(tmp_path) -> None:
    """production, then a user file, then minikube and --set: all present, later ones winning."""
    ours = tmp_path / "ours.yaml"
    ours.write_text("spec:\n  values:\n    pilot:\n      autoscaleMax: 9\n      traceSampling: 5\n")
    r = render_install_overlay(["production", str(ours), "minikube"], sets=["values.pilot.traceSampling=1"])
    spec = yaml.safe_load(r.text)["spec"]
    assert spec["values"]["pilot"] == {"autoscaleEnabled": False, "autoscaleMin": 2, "autoscaleMax": 9, "traceSampling": 1}
    assert spec["values"]["global"]["proxy"]["resources"]["requests"] == {"cpu": "10m", "memory": "40Mi"}
    assert spec["profile"] == "default"
    assert r.profiles == ("production", str(ours), "minikube")


def test_unknown_profile_lists_the_known_ones() -> None:
    """An unknown name lists the available profiles; a missing file says so; both at once."""
    with pytest.raises(OverlayInvalid) as exc:
        render_install_overlay(["nope", "./missing.yaml"])
    assert exc.value.problems == [
        "--profile nope: unknown profile (available: default, demo, minikube, minimal, production); "
        "a user profile is a path to an IstioOperator file",
        "--profile ./missing.yaml: no such file"]


def test_tuning_file_skips_the_annotations_document(tmp_path) -> None:
    """`meshops tune -o yaml` output is a valid --tuning file: its annotations document is skipped."""
    f = tmp_path / "tuning.yaml"
    f.write_text("kind: IstioOperator\nspec:\n  values:\n    global:\n      proxy:\n        resources:\n"
                 "          requests: {cpu: 35m}\n---\napiVersion: meshops.dev/v1\nkind: ProxyResourceAnnotations\n"
                 "workloads: []\n")
    r = render_install_overlay(["default"], tuning=str(f))
    assert r.spec["values"]["global"]["proxy"]["resources"]["requests"] == {"cpu": "35m"}


# ---- diff against what is installed -----------------------------------------------------------


class Rec:
    def __init__(self, overlay: str, version: str, revision: str, profiles: tuple[str, ...]) -> None:
        self.overlay, self.version, self.revision, self.profiles = overlay, version, revision, profiles


def test_diff_against_the_recorded_overlay() -> None:
    """With a recorded install: version change and a unified diff of the overlays."""
    old = render_install_overlay(["default"])
    new = render_install_overlay(["default"], sets=["values.pilot.traceSampling=1"])
    text = install_overlay.diff_text(new, version="1.24.1", revision="", recorded=Rec(old.text, "1.23.2", "", ("default",)),
                                     installed_spec=None)
    assert "version: 1.23.2 -> 1.24.1" in text
    assert "+  values:" in text and "+      traceSampling: 1" in text
    same = install_overlay.diff_text(old, version="1.23.2", revision="", recorded=Rec(old.text, "1.23.2", "", ("default",)),
                                     installed_spec=None)
    assert same.startswith("no changes")


def test_diff_against_installed_state_field_by_field() -> None:
    """Without a record: each field the overlay sets, installed value -> new value."""
    new = render_install_overlay(["default"], sets=["values.pilot.traceSampling=1", "values.pilot.autoscaleMin=1"])
    installed = {"profile": "default", "tag": "1.23.2", "values": {"pilot": {"traceSampling": 100, "autoscaleMin": 1}}}
    text = install_overlay.diff_text(new, version="1.23.2", revision="", recorded=None, installed_spec=installed)
    assert "  values.pilot.traceSampling: 100 -> 1" in text
    assert "autoscaleMin" not in text


def test_diff_when_nothing_is_installed() -> None:
    """Nothing installed: every line is new."""
    new = render_install_overlay(["minimal"])
    text = install_overlay.diff_text(new, version="1.23.2", revision="1-23-2", recorded=None, installed_spec=None)
    assert text.startswith("nothing installed for revision 1-23-2")
    assert "+  profile: minimal" in text
