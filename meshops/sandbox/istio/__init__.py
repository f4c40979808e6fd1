"""Istio behaviour for the sandbox: injection and validation webhooks, istioctl, ingress probes.

Pure decision logic (webhooks, injection, validation, profiles, manifests) has no I/O; the
admission plugins and the ingress endpoint read the in-process API store; the istioctl
programs (``istioctl/``) are plain HTTP clients of the sandbox API, like the real binary.
"""
