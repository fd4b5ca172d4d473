"""DSM PACS: a DICOM archive and web viewer that ships as a Synology DSM package."""

__version__ = "0.1.0"
