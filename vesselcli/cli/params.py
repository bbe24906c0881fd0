"""Click callbacks shared by the commands: each wraps one rule that lives in the library."""
from __future__ import annotations

import click

from ..io.pairing import check_pattern as _check_pattern


def name_pattern(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A partner-naming pattern such as ``{stem}_manual1`` (``vesselcli.io.pairing.check_pattern``)."""
    if value is None:
        return None
    try:
        return _check_pattern(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
