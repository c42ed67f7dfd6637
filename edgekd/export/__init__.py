"""Writers for deployable files (ONNX, TFLite) and their evaluation by the real runtimes."""
