"""Everything about the network: checkpoint format (`checkpoint`, torch-free), the torch
network (`network`), ONNX Runtime (`onnx_engine`), export (`export`, checked by `verify`) and which engine
runs (`engines`). The rest of the package goes through `engines.load_engine`.

Importing this package imports no torch.
"""
