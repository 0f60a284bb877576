"""From a float32 model to a published version: conversion, reduced precision, the accuracy gate,
offline photos, and the one candidate -> gate -> card -> publish path (:mod:`.publish`) that
``roost export`` (:mod:`.from_run`) and ``roost quantize`` (:mod:`.from_version`) both take."""
