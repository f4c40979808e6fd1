"""The IstioOperator fields meshops knows (``install.istio.io/v1alpha1``, Istio 1.2x).

A schema node is one of: a dict of field name -> node (unknown names are errors), a
one-element list ``[node]`` (a list of such items), ``MAP`` (free-form keys: labels,
annotations, resource names), or a leaf type (``BOOL``, ``INT``, ``NUM``, ``STR``,
``CPU``, ``MEM``, ``ANY``). Where Istio passes a Kubernetes type through (affinity, probes,
tolerations, HPA metrics) the model stops at its top level and accepts anything below:
istioctl itself hands those to the API server unchecked.

Sources: istio/istio ``operator/pkg/apis/types.go`` (IstioOperatorSpec, KubernetesResources),
``operator/pkg/apis/values_types.go`` (Values) and ``api/mesh/v1alpha1/config.proto``
(MeshConfig, ProxyConfig).
"""

from __future__ import annotations

from typing import Any


class Leaf:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


BOOL, INT, NUM, STR, CPU, MEM, ANY = (Leaf(n) for n in ("bool", "int", "number", "string", "cpu", "memory", "any"))
MAP = Leaf("map")  # a mapping with free-form keys and any values


def _fields(names: str, node: Any = ANY) -> dict[str, Any]:
    return dict.fromkeys(names.split(), node)


RESOURCES = {"requests": {"cpu": CPU, "memory": MEM, "ephemeral-storage": MEM},
             "limits": {"cpu": CPU, "memory": MEM, "ephemeral-storage": MEM},
             "claims": ANY}

HPA_SPEC = {"scaleTargetRef": ANY, "minReplicas": INT, "maxReplicas": INT, "metrics": ANY, "behavior": ANY,
            "targetCPUUtilizationPercentage": INT}
PDB_SPEC = {"minAvailable": ANY, "maxUnavailable": ANY, "selector": ANY, "unhealthyPodEvictionPolicy": STR}
AFFINITY = {"nodeAffinity": ANY, "podAffinity": ANY, "podAntiAffinity": ANY}
SERVICE_SPEC = {**_fields("ports selector clusterIP clusterIPs externalIPs loadBalancerSourceRanges ipFamilies "
                          "sessionAffinityConfig"),
                **_fields("type loadBalancerIP externalName externalTrafficPolicy sessionAffinity "
                          "ipFamilyPolicy loadBalancerClass internalTrafficPolicy", STR),
                "publishNotReadyAddresses": BOOL, "healthCheckNodePort": INT, "allocateLoadBalancerNodePorts": BOOL}

K8S = {
    "affinity": AFFINITY, "env": ANY, "hpaSpec": HPA_SPEC, "imagePullPolicy": STR, "nodeSelector": MAP,
    "podDisruptionBudget": PDB_SPEC, "podAnnotations": MAP, "priorityClassName": STR, "readinessProbe": ANY,
    "replicaCount": INT, "resources": RESOURCES, "service": SERVICE_SPEC, "strategy": ANY, "tolerations": ANY,
    "serviceAnnotations": MAP, "securityContext": ANY, "volumes": ANY, "volumeMounts": ANY, "overlays": ANY,
}

COMPONENT = {"enabled": BOOL, "namespace": STR, "hub": STR, "tag": ANY, "spec": ANY, "k8s": K8S}
GATEWAY = {**COMPONENT, "name": STR, "label": MAP}

PROXY_CONFIG = {
    **_fields("configPath binaryPath serviceCluster discoveryAddress proxyAdminPort statNameLength statusPort "
              "customConfigFile proxyBootstrapTemplatePath interceptionMode"),
    **_fields("drainDuration parentShutdownDuration terminationDrainDuration tracing proxyMetadata "
              "runtimeValues concurrency meshId tlsSettings envoyAccessLogService envoyMetricsService "
              "envoyAccessLogs proxyStatsMatcher holdApplicationUntilProxyStarts caCertificatesPem image "
              "privateKeyProvider proxyHeaders gatewayTopology extraStatTags readinessProbe fileFlushInterval "
              "fileFlushMinSizeKb sds availabilityZone controlPlaneAuthPolicy"),
}

MESH_CONFIG = {
    **_fields("proxyListenPort proxyInboundListenPort proxyHttpPort connectTimeout protocolDetectionTimeout "
              "tcpKeepalive ingressClass ingressService ingressControllerMode ingressSelector enableTracing "
              "accessLogFile accessLogFormat accessLogEncoding enableEnvoyAccessLogService "
              "disableEnvoyListenerLog outboundTrafficPolicy inboundTrafficPolicy configSources "
              "enableAutoMtls trustDomain trustDomainAliases caCertificates defaultServiceExportTo "
              "defaultVirtualServiceExportTo defaultDestinationRuleExportTo rootNamespace localityLbSetting "
              "dnsRefreshRate h2UpgradePolicy inboundClusterStatName outboundClusterStatName certificates "
              "serviceSettings enablePrometheusMerge verifyCertificateAtClient ca extensionProviders "
              "defaultProviders discoverySelectors pathNormalization defaultHttpRetryPolicy meshMTLS "
              "tlsDefaults serviceScopeConfigs thriftConfig"),
    "defaultConfig": PROXY_CONFIG,
}

GLOBAL_PROXY = {
    **_fields("autoInject clusterDomain componentLogLevel excludeIPRanges excludeInboundPorts "
              "excludeOutboundPorts image includeIPRanges includeInboundPorts includeOutboundPorts logLevel "
              "outlierLogPath tracer excludeInterfaces", STR),
    **_fields("enableCoreDump privileged holdApplicationUntilProxyStarts", BOOL),
    **_fields("readinessFailureThreshold readinessInitialDelaySeconds readinessPeriodSeconds statusPort", INT),
    **_fields("lifecycle startupProbe"),
    "resources": RESOURCES,
}

GLOBAL = {
    **_fields("hub tag variant imagePullPolicy istioNamespace jwtPolicy meshID network pilotCertProvider "
              "priorityClassName remotePilotAddress caAddress caName platform ipFamilyPolicy "
              "externalIstiod", STR),
    **_fields("configValidation logAsJson omitSidecarInjectorConfigMap operatorManageWebhooks "
              "mountMtlsCerts autoscalingv2API", BOOL),
    **_fields("imagePullSecrets defaultNodeSelector defaultTolerations meshNetworks certSigners "
              "ipFamilies sds sts tracer istiod waypoint defaultResources"),
    "proxy": GLOBAL_PROXY,
    "proxy_init": {"image": STR, "resources": RESOURCES},
    "defaultPodDisruptionBudget": {"enabled": BOOL},
    "multiCluster": {"enabled": BOOL, "clusterName": STR, "globalDomainSuffix": STR, "includeEnvoyFilter": BOOL},
    "logging": {"level": STR},
}

PILOT_VALUES = {
    **_fields("autoscaleEnabled enabled configMap enableProtocolSniffingForOutbound "
              "enableProtocolSniffingForInbound", BOOL),
    **_fields("autoscaleMin autoscaleMax replicaCount", INT),
    **_fields("hub tag variant image keepaliveMaxServerConnectionAge jwksResolverExtraRootCA "
              "rollingMaxSurge rollingMaxUnavailable ipFamilyPolicy", STR),
    "traceSampling": NUM,
    **_fields("autoscaleBehavior env affinity tolerations topologySpreadConstraints volumes volumeMounts "
              "extraContainerArgs seccompProfile ipFamilies configSource"),
    **_fields("nodeSelector podAnnotations serviceAnnotations podLabels deploymentLabels", MAP),
    "cpu": {"targetAverageUtilization": INT},
    "memory": {"targetAverageUtilization": INT},
    "resources": RESOURCES,
    "podDisruptionBudget": PDB_SPEC,
    "cni": {"enabled": BOOL, "provider": STR},  # 1.22+: replaces values.istio_cni (reference §7)
}

GATEWAY_VALUES = {
    **_fields("autoscaleEnabled runAsRoot customService", BOOL),
    **_fields("autoscaleMin autoscaleMax", INT),
    **_fields("name type externalTrafficPolicy loadBalancerIP injectionTemplate rollingMaxSurge "
              "rollingMaxUnavailable serviceAccount ipFamilyPolicy", STR),
    **_fields("env ports secretVolumes tolerations zvpn ingressPorts additionalContainers configVolumes "
              "loadBalancerSourceRanges ipFamilies podAntiAffinityLabelSelector "
              "podAntiAffinityTermLabelSelector topologySpreadConstraints affinity"),
    **_fields("labels nodeSelector podAnnotations serviceAnnotations", MAP),
    "cpu": {"targetAverageUtilization": INT},
    "memory": {"targetAverageUtilization": INT},
    "resources": RESOURCES,
}

VALUES = {
    "global": GLOBAL,
    "pilot": PILOT_VALUES,
    "gateways": {"istio-ingressgateway": GATEWAY_VALUES, "istio-egressgateway": GATEWAY_VALUES,
                 "securityContext": ANY, "seccompProfile": ANY},
    "sidecarInjectorWebhook": {
        **_fields("enableNamespacesByDefault rewriteAppHTTPProbe useLegacySelectors", BOOL),
        **_fields("reinvocationPolicy", STR),
        **_fields("objectSelector injectedAnnotations defaultTemplates templates neverInjectSelector "
                  "alwaysInjectSelector"),
    },
    "telemetry": {"enabled": BOOL, "v2": {"enabled": BOOL, "prometheus": {"enabled": BOOL}, "stackdriver": ANY}},
    "base": {**_fields("enableCRDTemplates enableIstioConfigCRDs", BOOL),
             **_fields("validationURL validationCABundle"), "excludedCRDs": ANY},
    "istiodRemote": {"enabled": BOOL, **_fields("injectionURL injectionPath injectionCABundle", STR)},
    "revisionTags": ANY, "meshConfig": MESH_CONFIG, "defaultRevision": STR, "ownerName": STR,
    "profile": STR, "revision": STR, "experimental": ANY, "cni": ANY, "ztunnel": ANY,
    # istioctl --set values.compatibilityVersion=1.x (reference §7); 1.22-1.23 injector values: istio_cni.
    "compatibilityVersion": STR, "istio_cni": ANY,
}

SPEC: dict[str, Any] = {
    "profile": STR, "installPackagePath": STR, "hub": STR, "tag": ANY, "namespace": STR, "revision": STR,
    "compatibilityVersion": STR, "resourceSuffix": STR,
    "meshConfig": MESH_CONFIG,
    "components": {
        "base": COMPONENT, "pilot": COMPONENT, "cni": COMPONENT, "ztunnel": COMPONENT,
        "istiodRemote": COMPONENT, "ingressGateways": [GATEWAY], "egressGateways": [GATEWAY],
    },
    "values": VALUES,
    "unvalidatedValues": MAP,
}
