"""torch -> ONNX: the two graphs, their verification, the bundle and the model-store entry."""
