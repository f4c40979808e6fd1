"""The sandbox: an embedded Kubernetes API, Istio behaviour, istioctl programs and Route53.

meshops's core never imports this package; it reaches a sandbox only over HTTP and
subprocesses, exactly as it reaches a real cluster.
"""
