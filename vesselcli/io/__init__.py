"""Everything that touches files: finding inputs, reading and writing images, DICOM, pairing.

- ``discover``: the input images and their output names (no collisions, nothing outside OUT).
- ``imageio``: reading and writing image files (the only module that does).
- ``pairing``: images with annotations and FOV masks, by one documented name rule.
- ``protocols``: the public datasets' layouts and test protocols.
- ``lock``: one run per output folder.
- ``dicom``: recognise DICOM files, sort photographs from other objects, decode one frame as
  ``(H, W, 3) uint8 RGB`` with its laterality and pixel size.
- ``dicom_seg``: one DICOM Segmentation object per mask (needs the ``dicom`` extra, highdicom).
"""
