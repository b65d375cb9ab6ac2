"""The export table of docs/guide/edge.md from the reports `survey-cracks export` writes beside each file.

    for p in fp32 fp16 int8; do survey-cracks export --precision $p --out out/crack_$p.onnx; done
    survey-cracks export --format torchscript --out out/crack_fp32.pt
    python bench/export_table.py out/crack_*.json   # the reports: crack_fp32.onnx.json, ..., crack_fp32.pt.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(paths: list[str]) -> None:
    print("| export | MB | images | max / mean score difference | pixel / patch label agreement | "
          "pixel F1@2 PyTorch → export | patch F1 PyTorch → export | F1 points lost |")
    print("|---|---|---|---|---|---|---|---|")
    for path in paths:
        report = json.loads(Path(path).read_text())
        c = report["check"]
        print(f"| {report['format']} {report['precision']} | {report['bytes'] / 1e6:.1f} | {c['image_count']} | "
              f"{c['max_abs_difference']:.2g} / {c['mean_abs_difference']:.2g} | "
              f"{c['pixel_label_agreement']} / {c['patch_label_agreement']} | "
              f"{c['pixel_f1_pytorch']} → {c['pixel_f1_export']} | {c['patch_f1_pytorch']} → {c['patch_f1_export']} | "
              f"{c['f1_loss_points']}{' **over the limit**' if c['f1_loss_over_limit'] else ''} |")


if __name__ == "__main__":
    main(sys.argv[1:])
