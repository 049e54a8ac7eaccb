"""Synthetic scalp photos with every pixel labelled (numpy, OpenCV and Pillow only).

``synthesize(out, n, seed)`` writes a data set: photos from the five views, zone and loss
masks, a manifest and a contact sheet. Lower-level pieces: `sample_subject` (one person),
`render_photo` (one view of them), `contact_sheet`.
"""

from __future__ import annotations

from scalpscan.data.synth.contact_sheet import contact_sheet, write_contact_sheet
from scalpscan.data.synth.dataset import SynthOptions, render_index, subject_for, synthesize
from scalpscan.data.synth.render import Photo, render_photo
from scalpscan.data.synth.subject import Subject, sample_subject

__all__ = [
    "Photo",
    "Subject",
    "SynthOptions",
    "contact_sheet",
    "render_index",
    "render_photo",
    "sample_subject",
    "subject_for",
    "synthesize",
    "write_contact_sheet",
]
