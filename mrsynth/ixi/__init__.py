"""IXI tooling: download, safe extraction, registration and preparation of paired T1/T2 volumes."""
