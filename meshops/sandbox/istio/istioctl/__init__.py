"""The sandbox's istioctl: one program per Istio version, a pure client of the Kubernetes API.

Run as ``python -m meshops.sandbox.istio.istioctl --istio-version 1.24.1 <istioctl args>``;
``meshops sandbox up`` writes small wrappers named ``istioctl`` and ``istioctl-<version>``.
"""
