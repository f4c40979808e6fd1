"""``pass_app`` without importing the engine until a command runs."""

from __future__ import annotations

from collections.abc import Callable
from functools import update_wrapper
from typing import Any

import click


def pass_app(f: Callable[..., Any]) -> Callable[..., Any]:
    """Like click's pass_obj, but builds the App (and configures logging) when the command runs."""

    @click.pass_context
    def wrapper(ctx: click.Context, *args: Any, **kwargs: Any) -> Any:
        from meshops.cli.app import app_from

        return ctx.invoke(f, app_from(ctx), *args, **kwargs)

    return update_wrapper(wrapper, f)
