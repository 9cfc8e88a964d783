"""gaml info: the environment a bug report needs."""

from __future__ import annotations

from ._common import DeviceOpt, FormatOpt, QuietOpt, setup


def info(device: DeviceOpt = "auto", fmt: FormatOpt = "human", quiet: QuietOpt = False):
    """Print gaml, Python and torch versions, the device --device picks, and model caches.

    Example:

    \b
        gaml info --device auto --format json
    """
    setup(fmt, quiet)
    import platform
    import sys

    from .. import __version__
    from ..core import console, hub, registry

    data = {"gaml": __version__, "python": sys.version.split()[0], "platform": platform.platform()}
    try:
        from ..core import runtime

        data.update(runtime.describe(device.value if hasattr(device, "value") else device))
    except ImportError:
        data["torch"] = None
        data["device"] = "unavailable (pip install 'gaml[torch]')"
    data["hf_cache"] = str(hub.hub_cache_dir())
    data["offline"] = hub.offline()
    data["assets"] = str(registry.ASSETS_DIR)
    if console.state.format == "json":
        console.print_json(data)
    else:
        import typer

        for k, v in data.items():
            typer.echo(f"{k}: {v}")
