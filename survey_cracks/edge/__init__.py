"""The torch-free runtime: an exported crack model on ONNX Runtime, numpy and OpenCV only.

For a drone's companion computer or a field laptop: ``EdgeModel`` runs a file made by
``survey-cracks export`` on one image (`EdgeModel.detect`), a folder of images
(`run_images`) or a video, camera or stream URL (`run_stream`). Importing this package
imports no torch; it installs alone as the ``survey-cracks-edge`` distribution
(``edge/pyproject.toml``) with the ``survey-cracks-edge`` command.
"""

from survey_cracks.edge.runtime import Crack, Detection, EdgeMeta, EdgeModel
from survey_cracks.edge.stream import StreamSummary, run_images, run_stream

__all__ = ["Crack", "Detection", "EdgeMeta", "EdgeModel", "StreamSummary", "run_images", "run_stream"]
