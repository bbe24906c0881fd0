"""Input and output formats beyond plain image files: DICOM photographs in, DICOM Segmentation out.

- ``dicom``: recognise DICOM files, sort photographs from other objects, decode one frame as
  ``(H, W, 3) uint8 RGB`` with its laterality and pixel size.
- ``dicom_seg``: one DICOM Segmentation object per mask (needs the ``dicom`` extra, highdicom).
"""
