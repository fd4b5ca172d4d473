"""pynetdicom adapters: one module per DICOM service, each a thin layer over archive/."""
