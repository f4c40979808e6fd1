"""Operations the step types share, between steps and drivers: reading the Istio mesh, restarts
and waits, Route53 weight sends and INSYNC waits, health gates, install overlays and records,
tuning queries. Nothing here is a step type (those are ``meshops.steps``); nothing here builds
a driver (everything comes from ``ctx.drivers`` or is passed in).
"""
