"""Conda channel names -> URLs, as conda resolves them.

`conda-forge` is `<channel_alias>/conda-forge`; a name listed in
`custom_channels` is `<its base URL>/<name>`; `defaults` is `default_channels`;
URLs and absolute paths (`file://`, `/srv/channel`) stand for themselves. The
settings come from the user's condarc files (the ones conda reads, later ones
winning) and `CONDA_CHANNEL_ALIAS`.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_ALIAS = "https://conda.anaconda.org"
DEFAULT_CHANNELS = ("https://repo.anaconda.com/pkgs/main", "https://repo.anaconda.com/pkgs/r")
_CONDARC_FILES = (
    "/etc/conda/.condarc", "/etc/conda/condarc", "/var/lib/conda/.condarc",
    "~/.config/conda/.condarc", "~/.config/conda/condarc", "~/.conda/.condarc", "~/.condarc",
)


@dataclass(frozen=True)
class ChannelSettings:
    alias: str = DEFAULT_ALIAS
    custom: dict[str, str] = field(default_factory=dict)
    defaults: tuple[str, ...] = DEFAULT_CHANNELS
    channels: tuple[str, ...] = ()  # the condarc's own channel list, used when conda.yaml names none
    sources: tuple[str, ...] = ()  # the condarc files read (for messages)

    def url(self, name: str) -> list[str]:
        """The channel URL(s) a name stands for (`defaults` may be several)."""
        name = name.strip().rstrip("/")
        if name == "defaults":
            return [url for channel in self.defaults for url in self.url(channel)]
        if "://" in name:
            return [name]
        if name.startswith("/"):
            return [f"file://{name}"]
        if name.startswith("~"):
            return [f"file://{os.path.expanduser(name)}"]
        first = name.split("/", 1)[0]
        if first in self.custom:
            return [f"{self.custom[first].rstrip('/')}/{name}"]
        return [f"{self.alias.rstrip('/')}/{name}"]


def condarc_files() -> list[Path]:
    files = [Path(os.path.expanduser(name)) for name in _CONDARC_FILES]
    if os.environ.get("CONDARC"):
        files.append(Path(os.path.expanduser(os.environ["CONDARC"])))
    return [path for path in files if path.is_file()]


def settings() -> ChannelSettings:
    import yaml

    alias, custom, defaults, channels, read = DEFAULT_ALIAS, {}, DEFAULT_CHANNELS, (), []
    for path in condarc_files():
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue  # conda would complain; a broken condarc is not ours to fail on
        if not isinstance(data, dict):
            continue
        read.append(str(path))
        if isinstance(data.get("channel_alias"), str):
            alias = data["channel_alias"]
        if isinstance(data.get("custom_channels"), dict):
            custom.update({str(k): str(v) for k, v in data["custom_channels"].items()})
        if isinstance(data.get("default_channels"), list):
            defaults = tuple(str(c) for c in data["default_channels"])
        if isinstance(data.get("channels"), list):
            channels = tuple(str(c) for c in data["channels"])
    alias = os.environ.get("CONDA_CHANNEL_ALIAS") or alias
    return ChannelSettings(alias, custom, defaults, channels, tuple(read))


def redact(url: str) -> str:
    """No credentials in keys or messages: user:password@ and anaconda.org /t/<token>/."""
    url = re.sub(r"//[^/@\s]*@", "//", url)
    return re.sub(r"/t/[^/]+/", "/t/***/", url)
