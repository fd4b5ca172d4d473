"""HL7 v2 over MLLP: orders from a RIS or HIS into the modality worklist.

A thin adapter, like dicom/ and web/: ``server`` listens (in the DICOM daemon,
beside the DICOM listeners), frames and bounds each message and checks who sent
it; ``charset`` decodes it by MSH-18; ``orm`` turns an ORM^O01 into the calls of
archive/orders.py that the registration page and the CSV import make; ``ack``
writes the HL7 v2.5 original-mode acknowledgement. The python-hl7 library
(``import hl7``) parses messages and runs the asyncio MLLP server.
"""
