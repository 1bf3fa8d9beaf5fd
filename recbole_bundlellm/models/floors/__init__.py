"""Label-free floors every table shows (whole session, first two, adjacent or random pairs)."""
