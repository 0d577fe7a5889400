"""The torch-free runtime: bundle reading, the random-draw rule, the score maths, onnxruntime.

Everything that serves or scores a model imports from here; nothing here imports torch,
`training` or `export`.
"""
