"""Part 1: raw transaction CSVs -> per-customer features, data-quality report, quarantine."""
