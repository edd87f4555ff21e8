"""Imports of optional extras, failing with the pip command that installs them."""

import importlib


def import_optional(module, extra, purpose):
    """Import ``module`` or raise ImportError naming the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"{purpose} needs the optional package '{module}'. "
            f"Install it with: pip install 'vaefilter[{extra}]'"
        ) from exc
