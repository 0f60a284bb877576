"""Decoding a request's image for a version: `choose.py` picks Pillow (`pillow.py`) or the GPU
decoder (`gpu_decoder.py`: JPEG frame sniffing in `jpeg.py`, batches in `coalescer.py`,
nvImageCodec in `nvimagecodec.py`, the resize on the device in `device_resize.py`)."""
