"""Bulk jobs on Ray Data: enrollment of folders and manifests (``enroll``), re-embedding (``migrate``).

Importing this package does not import Ray; the job modules do.
"""
