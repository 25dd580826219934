"""Reading and writing the files the datasets come in: validated tables, TFRecords, media (PyAV read and write).

Import-free: each module pulls in its own dependencies (PyAV only in media and encode).
"""
