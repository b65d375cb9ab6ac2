"""Everything about the network: checkpoint format (`checkpoint`, torch-free), the torch
network (`network`: `WindowGraph` takes uint8 windows and gives heatmap levels), ONNX Runtime and OpenVINO
(`onnx_engine`), export (`export`, checked by `verify`), which engine runs (`engines`) and, for ``engine: auto``
on a CPU, which was measured fastest here at equal outputs (`engine_choice`). The rest of the package goes through `engines.load_engine`.

Importing this package imports no torch.
"""
