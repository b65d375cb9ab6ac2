"""Disk size of the two installs: the full package (torch) and the torch-free edge runtime (edge/pyproject.toml).

Each goes into a fresh throw-away virtualenv (``python -m venv``, then ``pip install``
from this repository; pip's cache serves the wheels); the size reported is the
virtualenv's growth over a bare one (``du``-style: bytes of regular files), so the
interpreter links and pip itself are not counted. Also checks that the edge install
runs ``survey-cracks-edge --help`` and has no torch.

    python bench/install_sizes.py [--out bench/results/install_sizes.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]


def tree_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def venv_with(target: str | None, root: Path) -> tuple[Path, int]:
    """A fresh venv with ``target`` pip-installed (None: bare); its size in bytes."""
    env = root / (Path(target).name if target else "bare")
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    if target:
        subprocess.run([str(env / "bin" / "python"), "-m", "pip", "install", "--quiet", target], check=True)
    return env, tree_bytes(env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPOSITORY / "bench" / "results" / "install_sizes.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="survey_cracks_sizes_") as tmp:
        root = Path(tmp)
        _, bare = venv_with(None, root)
        full_env, full = venv_with(str(REPOSITORY), root)
        edge_env, edge = venv_with(str(REPOSITORY / "edge"), root)
        probe = "import sys, survey_cracks.edge; assert 'torch' not in sys.modules; print('torch-free')"
        torch_free = subprocess.run([str(edge_env / "bin" / "python"), "-c", probe], capture_output=True, text=True)
        has_torch = (edge_env / "lib").glob("python*/site-packages/torch")
        helps = subprocess.run([str(edge_env / "bin" / "survey-cracks-edge"), "--help"], capture_output=True, text=True)
        full_helps = subprocess.run([str(full_env / "bin" / "survey-cracks"), "stream", "--help"], capture_output=True)
    result = {
        "full_package_mb": round((full - bare) / 1e6, 1),
        "edge_runtime_mb": round((edge - bare) / 1e6, 1),
        "bare_venv_mb": round(bare / 1e6, 1),
        "edge_imports_without_torch": torch_free.stdout.strip() == "torch-free",
        "edge_has_no_torch_package": not any(has_torch),
        "edge_cli_runs": helps.returncode == 0,
        "full_cli_runs": full_helps.returncode == 0,
        "python": sys.version.split()[0],
        "command": "python bench/install_sizes.py",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
