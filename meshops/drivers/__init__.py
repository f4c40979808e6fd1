"""Drivers: the only code that talks to Kubernetes, AWS, Prometheus and subprocesses.

Steps see only the protocol modules: ``api`` (the ``Drivers`` set and its settings) and the
``*_api`` modules (``kube_api``, ``istioctl_api``, ``route53_api``, ``prometheus_api``,
``http_api``). The implementations (``kube``, ``istioctl``, ``route53``, ``prometheus``,
``http_probe``), the set that builds them (``live.LiveDrivers``) and the fakes are for the CLI
and tests; an import-linter contract keeps steps away from them. This package imports nothing
so that importing a protocol module stays cheap.
"""
