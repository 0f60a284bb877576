"""Decoding images for a version: JPEG markers, the Pillow decoder, and GPU decoding."""
