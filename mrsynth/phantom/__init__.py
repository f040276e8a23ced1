"""The built-in MRI phantom: anatomy, physical T1w/T2w signal, bias fields, dataset on disk."""
