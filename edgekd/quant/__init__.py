"""int8 quantization: the quantizer configuration (one place) and QAT preparation."""
