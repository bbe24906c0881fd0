"""How a photograph is put to the network, as pure functions over numpy arrays.

- ``fov``: the field of view, found from the pixels alone.
- ``preprocess``: the one preprocessing function of training and inference (scale, CLAHE,
  standardisation inside the FOV).
- ``calibre``: the processing scale chosen from what the photograph shows.
- ``tiling``: sliding-window prediction through any predictor callable; knows no engine.
"""
