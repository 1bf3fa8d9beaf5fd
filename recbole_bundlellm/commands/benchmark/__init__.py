"""``bundlellm benchmark``: methods x datasets x seeds, one run per cell, then tables and plots."""
